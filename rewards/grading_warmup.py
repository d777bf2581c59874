"""Imported once by the grading fork server, so that every grading child forked from it starts warm.

A grading child that is killed on a timeout is replaced by a fork of the fork server
(`multiprocessing`'s forkserver start method), which costs milliseconds if the server already holds
what a child needs: our grading modules, and math-verify and SymPy initialised, whose first
comparison in a process otherwise takes about a second (they load their LaTeX grammar lazily).
"""

import rewards.grading  # noqa: F401  (what the child unpickles its job from)
from rewards.math_equiv import equivalent

equivalent("x+1", "1+x")
