"""The reference continuation's NLL under a tiny causal LM built from a config (random weights, no
downloads) equals a manual cross-entropy computation, and feeds the token counters."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from prometheus_client import CollectorRegistry
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from lossgate.conventions import MAX_LOSS_NATS
from lossgate.instrument.lm import continuation_nll, nll_from_logprobs
from lossgate.instrument.tokens import TokenLossRecorder

VOCAB = 97


def _gpt2() -> Any:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    model: Any = GPT2LMHeadModel(cfg)
    return model.eval()


def _llama() -> Any:
    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    model: Any = LlamaForCausalLM(cfg)
    return model.eval()


def _manual(model: Any, prompt: list[int], reference: list[int]) -> float:
    """Token by token: feed the prefix, read the next token's log-softmax (no batching, no slicing)."""
    total = 0.0
    for j, token in enumerate(reference):
        ids = torch.tensor([prompt + reference[:j]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1].double()
        total += float(torch.nn.functional.cross_entropy(logits[None], torch.tensor([token])).item())
    return total


@pytest.mark.parametrize("build", [_gpt2, _llama], ids=["gpt2", "llama"])
def test_continuation_nll_equals_manual_cross_entropy(build: object) -> None:
    # Given a tiny causal LM with random weights, a prompt and a reference continuation
    model = build()  # type: ignore[operator]
    prompt, reference = [5, 17, 42], [8, 8, 90, 1, 33, 64]
    # When the helper scores the continuation in one forward pass
    got = continuation_nll(model, prompt, reference)
    # Then it equals the token-by-token cross-entropy sum, and counts the reference's tokens
    assert got.tokens == len(reference)
    assert got.nll == pytest.approx(_manual(model, prompt, reference), rel=1e-5)
    # And the loss per token of a random model is near ln(vocab) (its perplexity near the vocabulary)
    assert abs(got.nll / got.tokens - math.log(VOCAB)) < 1.0


def test_max_tokens_truncates_the_reference() -> None:
    # Given a reference longer than the bound
    model = _gpt2()
    full = continuation_nll(model, [1], [3, 4, 5, 6, 7])
    # When scored with max_tokens 2
    head = continuation_nll(model, [1], [3, 4, 5, 6, 7], max_tokens=2)
    # Then only the first two tokens count, with the same NLL as scoring them alone
    assert head.tokens == 2
    assert head.nll == pytest.approx(continuation_nll(model, [1], [3, 4]).nll, rel=1e-9)
    assert head.nll < full.nll


def test_empty_prompt_or_reference_is_refused() -> None:
    model = _gpt2()
    with pytest.raises(ValueError, match="prompt_ids"):
        continuation_nll(model, [], [1])
    with pytest.raises(ValueError, match="reference_ids"):
        continuation_nll(model, [1], [])


def test_server_logprobs_are_clipped_per_token() -> None:
    # Given a vLLM-style list of the reference tokens' log-probabilities, one unscorable
    got = nll_from_logprobs([-0.5, -30.0, None, -1.0])
    # Then each token counts at most the clip, and every token is counted
    assert got.tokens == 4
    assert got.nll == pytest.approx(0.5 + MAX_LOSS_NATS + MAX_LOSS_NATS + 1.0)


def test_scored_continuations_reach_the_exported_counters() -> None:
    # Given a recorder and three continuations scored by the tiny model
    registry = CollectorRegistry()
    recorder = TokenLossRecorder(registry)
    model = _gpt2()
    scored = [continuation_nll(model, [2, 3], ref) for ref in ([4, 5], [6], [7, 8, 9])]
    for s in scored:
        recorder.record(s.nll, s.tokens, model="chat", version="v2")
    # Then the exported sums are those of the scored requests
    labels = {"model": "chat", "version": "v2"}
    assert registry.get_sample_value("model_token_nll_requests_total", labels) == 3
    assert registry.get_sample_value("model_token_nll_tokens_total", labels) == 6
    nats = registry.get_sample_value("model_token_nll_nats_total", labels)
    assert nats == pytest.approx(sum(s.nll for s in scored))
