"""`agrpo generate`: write seeded Countdown, Sudoku or arithmetic items as JSONL."""

from __future__ import annotations

import argparse

from common.errors import UserError
from rewards.generators import GENERATORS, generate, generate_split, write_jsonl

OPTIONS = {
    "countdown": ("num_numbers", "min_number", "max_number", "min_target", "max_target"),
    "sudoku": ("min_blanks", "max_blanks"),
    "arithmetic": ("min_number", "max_number", "forms"),
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("generate", help="Write generated task items (with a correct completion) as JSONL.")
    parser.add_argument("--task", required=True, choices=tuple(GENERATORS), help="Generated task.")
    parser.add_argument("--n", type=int, required=True, help="Number of distinct items.")
    parser.add_argument("--seed", type=int, default=0, help="Seed; the same seed gives the same items.")
    parser.add_argument(
        "--split",
        choices=("train", "eval"),
        help="Write this split of the disjoint train/eval pair that training uses (data.num_eval = --n-eval).",
    )
    parser.add_argument("--n-eval", type=int, help="Size of the held-out split the train split avoids.")
    parser.add_argument("--output", required=True, help="JSONL file to write.")
    parser.add_argument("--num-numbers", type=int, nargs="+", help="Countdown: how many numbers (e.g. 3 4).")
    parser.add_argument("--min-number", type=int, help="Smallest number.")
    parser.add_argument("--max-number", type=int, help="Largest number.")
    parser.add_argument("--min-target", type=int, help="Countdown: smallest target.")
    parser.add_argument("--max-target", type=int, help="Countdown: largest target.")
    parser.add_argument("--min-blanks", type=int, help="Sudoku: fewest blank cells.")
    parser.add_argument("--max-blanks", type=int, help="Sudoku: most blank cells (at most 12).")
    parser.add_argument("--forms", nargs="+", help="Arithmetic: expression forms, e.g. a+b a*b-c.")
    parser.set_defaults(func=run)


def generator_options(args: argparse.Namespace) -> dict:
    """The options given on the command line; one that does not apply to the task is an error."""
    given = {
        name: getattr(args, name)
        for name in {n for names in OPTIONS.values() for n in names}
        if getattr(args, name) is not None
    }
    wrong = sorted(set(given) - set(OPTIONS[args.task]))
    if wrong:
        raise UserError(f"--{wrong[0].replace('_', '-')}: not an option of the {args.task} generator")
    return given


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UserError(f"--n {args.n}: must be at least 1")
    options = generator_options(args)
    if args.split is None:
        if args.n_eval is not None:
            raise UserError("--n-eval: only meaningful with --split")
        items = generate(args.task, args.n, args.seed, **options)
    elif args.split == "eval":
        items = generate_split(args.task, 0, args.n, args.seed, **options)[1]
    else:
        if args.n_eval is None or args.n_eval < 1:
            raise UserError("--split train: needs --n-eval (the held-out size the train items must avoid)")
        items = generate_split(args.task, args.n, args.n_eval, args.seed, **options)[0]
    path = write_jsonl(items, args.output)
    print(f"wrote {len(items)} {args.task} items to {path}")
    return 0
