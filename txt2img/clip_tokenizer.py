"""CLIP's kind of tokenizer, trained on the captions: a byte-level BPE saved in CLIP's own format.

Lower-cased and NFC-normalised, word ends marked "</w>", `<|startoftext|> ... <|endoftext|>`, padded with
`<|endoftext|>`; `AutoTokenizer.from_pretrained(folder)` gives a `CLIPTokenizer`. Every byte is in the
vocabulary, so any text in any script (Japanese, Chinese, Korean, Cyrillic, Arabic, ...) tokenizes
without an unknown token; scripts the captions use often get merges of their own (`vocab_size` is the
budget). One limit comes from CLIP's word regex, kept so that the files mean the same to every CLIP
tokenizer: a combining mark (Unicode category M, e.g. Persian's hamza above) is a word of its own, so
decoding puts a space before it.
"""

import json
import os

BOS_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
MIN_VOCAB_SIZE = 2 * 256 + 2  # every byte, alone and word-final, and the two special tokens


def train_tokenizer(captions: list, vocab_size: int = 2048, model_max_length: int = 32, out_dir: str | None = None):
    """Train CLIP's kind of BPE on `captions`; returns a `CLIPTokenizer` (saved to `out_dir` if given).

    The vocabulary is laid out as openai's: the 256 byte symbols, the same with "</w>", one token
    per merge in merge order, then `<|startoftext|>` and `<|endoftext|>`. Every byte being there,
    any text tokenizes without an unknown token.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    if isinstance(captions, str) or not captions or not all(isinstance(c, str) for c in captions):
        raise ValueError("captions must be a non-empty list of strings")
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be an int >= {MIN_VOCAB_SIZE}, got {vocab_size!r}")
    if not isinstance(model_max_length, int) or model_max_length < 3:
        raise ValueError(f"model_max_length must be an int >= 3, got {model_max_length!r}")
    # Train with the very normaliser (NFC, one space, lower case) and pre-tokeniser (CLIP's word
    # regex, then bytes to symbols) that CLIPTokenizer applies when it loads the files.
    reference = CLIPTokenizer().backend_tokenizer
    bpe = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix=END_OF_WORD))
    bpe.normalizer, bpe.pre_tokenizer = reference.normalizer, reference.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix=END_OF_WORD,
        show_progress=False,
    )
    bpe.train_from_iterator(captions, trainer)
    merges = [tuple(pair) for pair in json.loads(bpe.to_str())["model"]["merges"]][: vocab_size - MIN_VOCAB_SIZE]

    # Sorted by code point, the byte symbols come in openai's order: printable bytes, then the others.
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {}
    for token in symbols + [s + END_OF_WORD for s in symbols] + [a + b for a, b in merges] + [BOS_TOKEN, EOS_TOKEN]:
        vocab.setdefault(token, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    if out_dir is not None:
        save_tokenizer(tokenizer, vocab, merges, out_dir)
    return tokenizer


def save_tokenizer(tokenizer, vocab: dict, merges: list, out_dir: str) -> None:
    """tokenizer_config.json and tokenizer.json from transformers, and CLIP's own vocab.json + merges.txt."""
    os.makedirs(out_dir, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
