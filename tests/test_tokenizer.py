"""CLIP tokenizers built offline."""

from resulic.models.tokenizer import byte_level_tokenizer, clip_tokenizer_from_bpe

from .conftest import shared_path


def test_byte_level_tokenizer_round_trips_text():
    tok = byte_level_tokenizer()
    assert len(tok) == 514
    ids = tok("a red barn").input_ids
    assert ids[0] == 512 and ids[-1] == 513
    assert tok.decode(ids, skip_special_tokens=True) == "a red barn"


def test_real_clip_tokenizer_from_the_shared_vocabulary():
    tok = clip_tokenizer_from_bpe(shared_path("vocab", "bpe_simple_vocab_16e6.txt.gz"))
    assert len(tok) == 49408
    ids = tok("A red barn surrounded by trees").input_ids
    assert ids[0] == 49406 and ids[-1] == 49407 and ids[1] == 320  # "a</w>" is 320 in CLIP
    assert tok.decode(ids, skip_special_tokens=True) == "a red barn surrounded by trees"
