"""oneDNN linear layers against torch's own: same function, same parameters, never stale."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from sbert_retrieval.encoding.onednn import (
    ONEDNN_ENV,
    OneDnnLinear,
    onednn_supported,
    use_onednn_linear,
)
from tests.conftest import tiny_bert_config

pytestmark = pytest.mark.skipif(
    not onednn_supported(torch.float32), reason="this torch build or CPU has no oneDNN linear"
)


def _bert(dtype: torch.dtype = torch.float32) -> nn.Module:
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    # No dropout: two models trained in turn must take the same steps.
    config = tiny_bert_config(
        num_labels=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    model = BertForSequenceClassification(config)
    model.to(dtype).eval()
    return model


def _inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (3, 11), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask}


def test_every_linear_layer_is_swapped_and_the_gelu_moves_into_the_feed_forward_gemm() -> None:
    model = _bert()
    keys = list(model.state_dict())
    layers = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert use_onednn_linear(model) == layers
    swapped = [m for m in model.modules() if isinstance(m, OneDnnLinear)]
    assert len(swapped) == layers
    bert: nn.Module = model.bert  # type: ignore[assignment]
    intermediates = [layer.intermediate for layer in bert.encoder.layer]  # type: ignore[union-attr]
    assert all(block.dense.fused_gelu for block in intermediates)
    assert all(isinstance(block.intermediate_act_fn, nn.Identity) for block in intermediates)
    assert sum(m.fused_gelu for m in swapped) == len(intermediates)
    assert list(model.state_dict()) == keys  # saving and loading are unchanged


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_outputs_match_the_plain_model(dtype: torch.dtype) -> None:
    if not onednn_supported(dtype):
        pytest.skip(f"oneDNN has no {dtype} linear on this CPU")
    plain = _bert(dtype)
    fast = copy.deepcopy(plain)
    assert use_onednn_linear(fast) > 0
    with torch.inference_mode():
        want = plain(**_inputs()).logits.float()
        got = fast(**_inputs()).logits.float()
    # float32: the same GEMM in another kernel; bfloat16: the GELU reads float32 accumulators
    # where the plain path rounds them to bfloat16 first.
    tolerance = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got, want, atol=tolerance, rtol=0)


def test_training_runs_the_plain_layers_and_evaluation_never_sees_stale_weights() -> None:
    plain = _bert()
    fast = copy.deepcopy(plain)
    use_onednn_linear(fast)
    for model in (plain, fast):
        model.train()
        # SGD's foreach update changes the weights in place, as every torch optimizer does.
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        with torch.inference_mode():  # packs the starting weights
            model.eval()(**_inputs())
        model.train()
        for step in range(3):
            loss = model(**_inputs(step)).logits.square().mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
    for name, parameter in plain.named_parameters():
        torch.testing.assert_close(fast.get_parameter(name), parameter, atol=1e-6, rtol=0)
    with torch.inference_mode():
        torch.testing.assert_close(
            fast(**_inputs()).logits, plain(**_inputs()).logits, atol=1e-5, rtol=0
        )
    # A weight loaded in place (a checkpoint restored) is repacked too.
    fast.load_state_dict(_bert().state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(
            fast(**_inputs()).logits, _bert()(**_inputs()).logits, atol=1e-5, rtol=0
        )


def test_autocast_runs_the_plain_layers() -> None:
    plain = _bert()
    fast = copy.deepcopy(plain)
    use_onednn_linear(fast)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(
            fast(**_inputs()).logits, plain(**_inputs()).logits, atol=0, rtol=0
        )


def test_a_used_model_deep_copies_and_pickles() -> None:
    # Saving deep-copies the model; the packed oneDNN tensor can be neither copied nor pickled.
    model = _bert()
    use_onednn_linear(model)
    with torch.inference_mode():
        want = model(**_inputs()).logits
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with torch.inference_mode():
            torch.testing.assert_close(clone(**_inputs()).logits, want, atol=0, rtol=0)


def test_the_environment_switch_and_unsupported_dtypes_keep_torch_layers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert use_onednn_linear(_bert(torch.float16)) == 0
    monkeypatch.setenv(ONEDNN_ENV, "0")
    model = _bert()
    assert use_onednn_linear(model) == 0
    assert not any(isinstance(m, OneDnnLinear) for m in model.modules())


def test_a_model_cast_after_the_swap_runs_the_plain_layers() -> None:
    # float16 has no oneDNN linear here: the cast copy must still compute, as nn.Linear does.
    plain = _bert().to(torch.float16)
    fast = _bert()
    use_onednn_linear(fast)
    fast.to(torch.float16)
    with torch.inference_mode():
        torch.testing.assert_close(
            fast(**_inputs()).logits, plain(**_inputs()).logits, atol=0, rtol=0
        )
