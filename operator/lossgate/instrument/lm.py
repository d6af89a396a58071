"""NLL of a reference continuation under a causal language model (Hugging Face- or vLLM-style).

When a label arrives for a language model's answer (the text the user accepted, or their edit of it),
the model's loss on that request is the NLL of the reference continuation given the prompt: the sum
over the reference's tokens of -log p(token | prompt, earlier reference tokens), each clipped at
MAX_LOSS nats (p >= 1e-6, as for every other loss lossgate counts), and the number of tokens. Count
it with TokenLossRecorder.record or post it to the joiner as a token label (docs/joiner.md).

torch is imported only when a function here runs (the `lossgate[torch]` extra).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from lossgate.conventions import MAX_LOSS_NATS


class TokenNLL(NamedTuple):
    nll: float  # summed over the reference's tokens, nats
    tokens: int


def continuation_nll(
    model: Any, prompt_ids: Sequence[int], reference_ids: Sequence[int], *, max_tokens: int | None = None
) -> TokenNLL:
    """S and T of `reference_ids` following `prompt_ids` under a causal LM (`model(input_ids).logits`,
    as transformers' *ForCausalLM return). The prompt needs at least one token (a BOS token will do):
    the first reference token is predicted from it. `max_tokens`: score only the first that many
    reference tokens (the bound spec.analysis.tokenLoss.maxTokensPerRequest rests on)."""
    import torch

    prompt, reference = [int(t) for t in prompt_ids], [int(t) for t in reference_ids]
    if not prompt:
        raise ValueError("prompt_ids must hold at least one token (e.g. the BOS token)")
    if max_tokens is not None:
        reference = reference[:max_tokens]
    if not reference:
        raise ValueError("reference_ids must hold at least one token")
    device = next(model.parameters()).device
    ids = torch.tensor([prompt + reference], dtype=torch.long, device=device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    # Position j's logits predict token j + 1: the reference's tokens are predicted by the positions
    # from the prompt's last one to the one before the reference's last.
    start = len(prompt) - 1
    scores = logits[start : start + len(reference)].double()
    log_p = torch.log_softmax(scores, dim=-1)
    target = torch.tensor(reference, dtype=torch.long, device=device)
    per_token = (-log_p.gather(1, target[:, None])[:, 0]).clamp(max=MAX_LOSS_NATS)
    return TokenNLL(float(per_token.sum().item()), len(reference))


def text_continuation_nll(
    model: Any, tokenizer: Any, prompt: str, reference: str, *, max_tokens: int | None = None
) -> TokenNLL:
    """continuation_nll of text: the prompt tokenised as the server does (special tokens included),
    the reference without special tokens (it continues the prompt)."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    reference_ids = tokenizer(reference, add_special_tokens=False)["input_ids"]
    return continuation_nll(model, prompt_ids, reference_ids, max_tokens=max_tokens)


def nll_from_logprobs(logprobs: Sequence[float | None]) -> TokenNLL:
    """S and T from the reference tokens' log-probabilities a server already returned (vLLM's
    `prompt_logprobs` of prompt + reference, sliced to the reference; OpenAI-style `echo` logprobs).
    None or -inf (a token the server could not score) counts at the clip."""
    if not logprobs:
        raise ValueError("logprobs must hold at least one token's log-probability")
    total = 0.0
    for lp in logprobs:
        if lp is None or (isinstance(lp, float) and math.isnan(lp)):
            total += MAX_LOSS_NATS
        else:
            total += min(max(-float(lp), 0.0), MAX_LOSS_NATS)
    return TokenNLL(total, len(logprobs))
