"""Tiny random Hugging Face models for the tests (no download): the GPT-2 they share, and a fixture that
keeps transformers' warnings out of the test output. Import only after ``pytest.importorskip("transformers")``."""
from __future__ import annotations

import pytest
import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel


@pytest.fixture(autouse=True)
def quiet_transformers():
    """transformers' logging at ERROR for the test, as it was after (imported into a module: autouse there)."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    yield
    transformers.logging.set_verbosity(verbosity)


def tiny_gpt2(vocab: int, seed: int = 0) -> GPT2LMHeadModel:
    """A 2-layer, 16-wide GPT-2 with random weights drawn under ``seed``, no dropout."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0,
                        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)
