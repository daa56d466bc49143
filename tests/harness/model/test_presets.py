from __future__ import annotations

import pytest

from harness.model.presets import GPUS, MODELS, PresetError, gpu_preset, model_preset

# Parameter counts stated on the model cards.
CARD_PARAMS = {"llama3.2-1b": 1.24e9, "llama3-8b": 8.03e9, "llama3-70b": 70.6e9,
               "qwen2.5-7b": 7.61e9, "llama3.1-8b": 8.03e9, "llama3.1-70b": 70.6e9,
               "qwen2.5-7b-1m": 7.61e9, "mistral-7b": 7.24e9}
# max_position_embeddings of each model card's config.json.
CARD_CONTEXT = {"llama3-8b": 8192, "llama3.1-8b": 131072, "llama3.1-70b": 131072,
                "qwen2.5-7b-1m": 1010000, "mistral-7b": 32768}


@pytest.mark.parametrize("name", sorted(CARD_PARAMS))
def test_params_computed_from_shape_match_model_cards(name):
    assert MODELS[name].num_params == pytest.approx(CARD_PARAMS[name], rel=0.01)


def test_required_presets_exist():
    assert {"tiny", "llama3-8b", "llama3-70b", "qwen2.5-7b", "llama3.2-1b"} <= set(MODELS)
    assert {"h100-80gb", "h200-141gb", "a100-80gb"} <= set(GPUS)


def test_head_dim_times_heads_is_hidden_for_llama3_8b():
    m = model_preset("llama3-8b")
    assert m.num_heads * m.head_dim == m.hidden_size


def test_unknown_preset_names_the_choices():
    with pytest.raises(PresetError, match="llama3-8b"):
        model_preset("gpt-5")
    with pytest.raises(PresetError, match="h100-80gb"):
        gpu_preset("tpu")


@pytest.mark.parametrize("name", sorted(CARD_CONTEXT))
def test_presets_carry_their_context_length(name):
    assert MODELS[name].max_model_len == CARD_CONTEXT[name]


def test_a_70b_model_needs_tensor_parallelism_and_fits_under_it():
    from harness.model.budget import BudgetError, kv_budget
    from harness.model.config import RunConfig

    model = model_preset("llama3.1-70b")
    with pytest.raises(BudgetError):
        kv_budget(RunConfig(model=model))
    assert kv_budget(RunConfig(model=model, tp=4)).slots > model.max_model_len


def test_only_mistral_attends_through_a_sliding_window():
    assert model_preset("mistral-7b").sliding_window == 4096  # its config.json's sliding_window
    assert {name for name, m in MODELS.items() if m.sliding_window} == {"mistral-7b"}
