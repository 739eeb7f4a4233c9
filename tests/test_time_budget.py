"""The BOOST recipe's time budget: speed measurement, stage predictions, and fitting a job to a budget."""

import dataclasses

import pytest
import torch

from trainers.recipes.boost import parse_args, theta_updates
from trainers.recipes.time_budget import (
    SELF_PLAY_STAGE,
    MachineSpeed,
    fit_to_budget,
    given_on_command_line,
    measure_speed,
    optimizer_steps_by_phase,
    predict_seconds,
)

METHODS = ("vanilla_synthetic", "boost")


def speed(factor: float) -> MachineSpeed:
    """A machine ``factor`` times the speed of a reference one (200 training, 40 generation tokens/s)."""
    return MachineSpeed(200.0 * factor, 40.0 * factor, "float32", "float32")


def webshop_defaults():
    return parse_args("webshop", [])


def total(recipe, config, machine) -> float:
    return sum(predict_seconds(recipe, config, METHODS, machine).values())


def test_optimizer_steps_by_phase_follows_algorithm_1_schedule():
    assert optimizer_steps_by_phase("boost", 14, 3, 3, 1) == {"psi": 6, "theta": 6, "phi": 2}
    # a partial outer iteration fills ψ first, then θ
    assert optimizer_steps_by_phase("boost", 5, 2, 2, 1) == {"psi": 2, "theta": 2, "phi": 1}
    assert optimizer_steps_by_phase("bilevel", 9, 3, 3, 1) == {"psi": 5, "theta": 3, "phi": 1}
    assert optimizer_steps_by_phase("vanilla", 6, 3, 3, 1) == {"uniform": 6}
    assert theta_updates(14, 3, 3, 1) == 6
    # φ's warm-up steps come first and take no θ update
    assert optimizer_steps_by_phase("boost", 16, 3, 3, 1, 2) == {"psi": 6, "theta": 6, "phi": 4}
    assert theta_updates(16, 3, 3, 1, 2) == 6


def test_prediction_scales_with_the_machine_and_names_the_recipe_stages():
    recipe, config = webshop_defaults()
    fast, slow = predict_seconds(recipe, config, METHODS, speed(4)), predict_seconds(recipe, config, METHODS, speed(1))
    assert set(fast) == {
        SELF_PLAY_STAGE,
        "vanilla_synthetic/train",
        "vanilla_synthetic/evaluation",
        "boost/setup (tokenize, embed)",
        "boost/train",
        "boost/evaluation",
    }
    for stage in fast:
        assert slow[stage] > fast[stage]
    # BOOST trains ψ, θ and φ; Vanilla+Syn only as many steps as BOOST's θ updates, each cheaper
    assert slow["boost/train"] > slow["vanilla_synthetic/train"]


def test_a_wider_phi_batch_costs_more_phi_time():
    recipe, config = webshop_defaults()
    narrow = predict_seconds(recipe, dataclasses.replace(config, phi_batch_size=None), ["boost"], speed(1))
    wide = predict_seconds(recipe, dataclasses.replace(config, phi_batch_size=16), ["boost"], speed(1))
    assert wide["boost/train"] > narrow["boost/train"]
    assert wide["boost/evaluation"] == narrow["boost/evaluation"]


def test_a_fast_machine_keeps_the_settings():
    recipe, config = webshop_defaults()
    fitted_recipe, fitted_config, _, changes = fit_to_budget(recipe, config, METHODS, speed(100), 14 * 60)
    assert changes == []
    assert (fitted_recipe.num_real, fitted_config.max_steps) == (recipe.num_real, config.max_steps)


def test_a_slow_machine_shrinks_data_first_and_steps_by_whole_outer_iterations():
    recipe, config = webshop_defaults()
    machine = speed(0.25)
    budget = total(recipe, config, machine) / 1.6
    fitted_recipe, fitted_config, predicted, changes = fit_to_budget(recipe, config, METHODS, machine, budget)
    assert sum(predicted.values()) <= budget
    assert [change.split()[0] for change in changes][:1] == ["num_real"]
    assert fitted_recipe.num_real < recipe.num_real
    cycle = config.k_psi + config.k_theta + config.k_phi
    outer_steps = fitted_config.max_steps - config.phi_warmup_steps  # φ's warm-up steps are kept
    assert outer_steps % cycle == 0 and outer_steps >= cycle
    # the inputs are left alone
    assert recipe.num_eval_episodes == 8 and config.max_steps == 14


def test_fitting_stops_at_the_floors_and_keeps_what_the_user_gave():
    recipe, config = webshop_defaults()
    fitted_recipe, fitted_config, predicted, changes = fit_to_budget(
        recipe, config, METHODS, speed(0.001), 60.0, fixed={"num_real"}
    )
    assert fitted_recipe.num_eval_episodes == 4 and fitted_recipe.num_real == recipe.num_real
    assert fitted_recipe.synthetic_max_steps == 2 and fitted_recipe.eval_max_turns == 4
    assert fitted_config.max_steps == config.k_psi + config.k_theta + config.k_phi
    assert sum(predicted.values()) > 60.0  # cannot fit: the caller reports it
    assert not any(change.startswith("num_real") for change in changes)


def test_flags_given_on_the_command_line_are_found():
    argv = ["--num_real", "8", "--max_steps=4", "--output_dir", "x", "num_eval_episodes"]
    assert given_on_command_line(argv, ["num_real", "max_steps", "num_eval_episodes"]) == {"num_real", "max_steps"}


def test_measure_speed_times_a_copy_and_leaves_the_model_untouched(tiny_llama):
    before = {name: p.detach().clone() for name, p in tiny_llama.named_parameters()}
    measured = measure_speed(tiny_llama, sequence_length=16, new_tokens=2)
    assert measured.training_tokens_per_s > 0 and measured.generation_tokens_per_s > 0
    assert measured.training_dtype in ("float32", "bfloat16")
    for name, parameter in tiny_llama.named_parameters():
        assert torch.equal(parameter, before[name]) and parameter.grad is None


@pytest.mark.parametrize("forced", ["fp32", "bf16"])
def test_measure_speed_reports_the_precision_the_library_picks(tiny_llama, monkeypatch, forced):
    monkeypatch.setenv("TRAINERS_PRECISION", forced)
    measured = measure_speed(tiny_llama, sequence_length=8, new_tokens=1)
    expected = {"fp32": "float32", "bf16": "bfloat16"}[forced]
    assert measured.training_dtype == measured.generation_dtype == expected
