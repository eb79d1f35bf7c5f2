"""Tiny random models with tokenizers made from the toy corpus: a BERT (WordPiece), a RoBERTa (byte-level BPE), and
every family a study can compare."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from hpsearch.architectures import architecture


def build_tiny_bert(folder: Path, sentences: list[str], layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """Save a random BERT (``layers`` x ``hidden``) and its tokenizer to ``folder``; return it."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    # The vocabulary is chosen here, not trained: the WordPiece trainer breaks ties between equally frequent pieces
    # differently in each process, and a different vocabulary is a different model for every test that trains one.
    words = Counter(word for sentence in sentences for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(sentence)))
    letters = sorted({letter for word in words for letter in word})
    common = [word for word, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])) if len(word) > 1]
    pieces = list(dict.fromkeys(special + letters + [f"##{letter}" for letter in letters] + common))[:200]
    tok = Tokenizer(models.WordPiece({piece: i for i, piece in enumerate(pieces)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = BertTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=128,
    )
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=128, type_vocab_size=2,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder


def build_tiny_roberta(folder: Path, sentences: list[str], seed: int = 0) -> Path:
    """Save a random 2-layer RoBERTa and a byte-level BPE tokenizer (as RoBERTa's and GPT-2's: a word's first piece
    carries the space before it) to ``folder``; return it."""
    import json

    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(sentences, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in json.loads(bpe.to_str())["model"]["merges"]]
    tokenizer = RobertaTokenizer(vocab=bpe.get_vocab(), merges=merges, model_max_length=128)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    RobertaModel(config).save_pretrained(folder)
    return folder


def build_tiny_deberta_spm(folder: Path, sentences: list[str], seed: int = 0) -> Path:
    """Save a random 2-layer DeBERTa-v2 whose tokenizer is only a SentencePiece file (``spm.model``), as DeBERTa-v3
    comes from the hub: loading it needs the sentencepiece package."""
    import json

    import sentencepiece
    import torch
    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2Model

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.txt").write_text("\n".join(sentences * 5), encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(folder / "corpus.txt"), model_prefix=str(folder / "spm"), vocab_size=60, model_type="unigram", pad_id=0,
        bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]", unk_piece="[UNK]",
        user_defined_symbols=["[MASK]"], minloglevel=2,
    )
    for name in ("corpus.txt", "spm.vocab"):
        (folder / name).unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "DebertaV2Tokenizer"}), encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = DebertaV2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                             **_FAMILY_SETTINGS["deberta-v2"])
    torch.manual_seed(seed)
    DebertaV2Model(config).save_pretrained(folder)
    return folder


FAMILIES = ["bert", "roberta", "distilbert", "deberta-v2", "electra", "xlm-roberta", "albert", "mpnet", "modernbert", "gpt2", "llama",
            "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo2", "phi3"]
"""Model families a study can compare; each gets a tiny random model (see :func:`build_tiny_family`)."""

_FAMILY_SETTINGS: dict[str, dict[str, object]] = {
    **{family: {"num_key_value_heads": 2, "head_dim": 16} for family in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo2")},
    "phi3": {"num_key_value_heads": 2},
    "electra": {"embedding_size": 16},  # a projection between embeddings and blocks, as in the real ELECTRA
    "albert": {"embedding_size": 16},
    "deberta-v2": {"relative_attention": True, "pos_att_type": ["p2c", "c2p"], "position_biased_input": False,
                   "norm_rel_ebd": "layer_norm", "share_att_key": True, "max_relative_positions": -1, "position_buckets": 16},
}


def build_tiny_family(folder: Path, family: str, tokenizer_folder: Path, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """A random ``family`` model (``layers`` x ``hidden``) with the tiny BERT's tokenizer, as users save them.

    Decoders get the tokenizer without a pad token, as GPT-2's and Llama's own tokenizers come.
    """
    import shutil

    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in
           (("pad_token_id", "[PAD]"), ("bos_token_id", "[CLS]"), ("eos_token_id", "[SEP]"), ("cls_token_id", "[CLS]"), ("sep_token_id", "[SEP]"))}
    if architecture(family).decoder:  # as GPT-2's or Llama's tokenizer: an end-of-text token, no pad token
        ids["pad_token_id"] = None  # not the family's default (Phi-3's is id 32000, beyond this vocabulary)
        tokenizer.pad_token = None
        tokenizer.eos_token = "[SEP]"
    config = AutoConfig.for_model(
        family, vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=128, **ids, **_FAMILY_SETTINGS.get(family, {}),
    )
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for name in ("tokenizer.json", "vocab.txt"):
        if (tokenizer_folder / name).is_file() and not (folder / name).is_file():
            shutil.copy(tokenizer_folder / name, folder / name)
    return folder
