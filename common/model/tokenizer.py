"""The tokenizer of the built-in tiny model: one token per character, plus the task tags as whole tokens.

Character level keeps the vocabulary tiny (105 ids), so a 1M-parameter model can learn arithmetic and
Countdown without an embedding table that dwarfs the rest of the network. The tags the rewards parse
(`<answer>`, `<think>`, ...) are single tokens so a format reward does not depend on the model spelling a
tag letter by letter. Ids are fixed by construction order, so two processes always agree on them.

A character outside printable ASCII and newline has no id; encoding it raises instead of being dropped.
Padding goes on the left: a completion is appended after the prompt, so prompts end-align.
"""

from __future__ import annotations

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, MASK = "<|pad|>", "<|eos|>", "<|mask|>"
SPECIAL_TOKENS = (PAD, EOS, MASK)
TAG_TOKENS = ("<answer>", "</answer>", "<think>", "</think>", "<reasoning>", "</reasoning>")
CHARACTERS = (*(chr(code) for code in range(0x20, 0x7F)), "\n")


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Ids: <|pad|> 0, <|eos|> 1, <|mask|> 2, the six tags 3..8, then the 96 characters in code order."""
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + TAG_TOKENS + CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=None))
    # Every character is its own pre-token; `[\s\S]` matches newline too, which `.` does not.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    # Join tokens back without separators (the default decoder would put spaces between characters).
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    # Tags are ordinary added tokens: matched whole in text, and kept when special tokens are skipped.
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        mask_token=MASK,
        clean_up_tokenization_spaces=False,
        padding_side="left",
    )
