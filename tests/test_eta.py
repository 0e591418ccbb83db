"""The ETA prices each kind of step by what it costs, leaving out compile steps."""

import pytest

from hgrad.core import eta
from hgrad.core.loop import Schedule


def _row(phase, wall, render=0.1, **more):
  return {"phase": phase, "wall_s": wall, "host_render_s": render, "device_s": wall - render,
          **more}


def test_the_first_step_of_each_kind_compiles_and_is_not_a_cost():
  costs = eta.StepCosts([], render_sets_per_outer=59)
  costs.add(_row("warmup", 30.0))                   # compile
  for _ in range(5):
    costs.add(_row("warmup", 1.5))
  assert costs.cost("plain") == (pytest.approx(1.5), False)


def test_an_unseen_outer_step_is_priced_from_the_plain_ones_then_measured():
  costs = eta.StepCosts([], render_sets_per_outer=59)
  for wall in (20.0, 1.5, 1.5, 1.5):
    costs.add(_row("warmup", wall))
  outer, estimated = costs.cost("outer")
  assert estimated and outer == pytest.approx(eta.OUTER_DEVICE_FACTOR * 1.4 + 59 * 0.1)
  schedule = Schedule(warmup_steps=4, outer_steps=10, train_steps_per_outer=2, final_steps=20)
  outer_left = schedule.outer_steps_from(4)
  total, estimated = costs.remaining(outer_left, schedule.total_steps - 4 - outer_left)
  assert estimated and total == pytest.approx(10 * outer + 40 * 1.5)
  costs.add(_row("outer", 60.0))                    # compile
  costs.add(_row("outer", 12.0))
  assert costs.cost("outer") == (pytest.approx(12.0), False)
  assert eta.format_eta(125, True) == "~2m05s" and eta.format_eta(3725) == "1h02m"


def test_a_resumed_run_prices_steps_from_its_history():
  history = [_row("warmup", 1.5)] * 8 + [_row("outer", 12.0)] * 3 + [_row("train", 1.5)] * 6
  costs = eta.StepCosts(history, render_sets_per_outer=59)
  costs.add(_row("train", 40.0))                    # this process compiles again
  assert costs.cost("plain") == (pytest.approx(1.5), False)
  assert costs.cost("outer") == (pytest.approx(12.0), False)


def test_steps_compiled_ahead_all_count():
  costs = eta.StepCosts([], render_sets_per_outer=5, first_step_compiles=False)
  for _ in range(eta.MIN_MEASURED):
    costs.add(_row("warmup", 2.0))
  assert costs.cost("plain") == (pytest.approx(2.0), False)


def test_no_number_until_a_kind_is_measured():
  """A first slow step does not become an ETA of hours: 'estimating' until MIN_MEASURED."""
  costs = eta.StepCosts([], render_sets_per_outer=5, first_step_compiles=False)
  costs.add(_row("warmup", 40.0, overhead_s=30.0))
  assert costs.remaining(10, 890) == (None, True)
  assert eta.format_eta(*costs.remaining(10, 890)) == "estimating"
  for _ in range(eta.MIN_MEASURED - 1):
    costs.add(_row("warmup", 1.0))
  total, estimated = costs.remaining(10, 890)
  assert estimated and total is not None           # outer steps priced from the plain ones
  assert costs.remaining(0, 890)[1] is False


def test_the_work_between_steps_is_priced_by_its_mean():
  """L every 4th step costs 2 s: a median would say 0, the mean says 0.5 s a step."""
  history = [_row("warmup", 1.0, overhead_s=2.0 if i % 4 == 0 else 0.0) for i in range(8)]
  costs = eta.StepCosts(history, render_sets_per_outer=5)
  total, estimated = costs.remaining(0, 10)
  assert not estimated and total == pytest.approx(10 * 1.5)


def test_a_time_budget_cuts_the_eta_short():
  costs = eta.StepCosts([_row("warmup", 1.0, overhead_s=1.0)] * 3, render_sets_per_outer=5)
  total, _ = costs.remaining(0, 100, budget_left_s=10.0)
  assert total == pytest.approx(20.0)      # 10 s of steps and the 10 s between them
  assert costs.remaining(0, 100, budget_left_s=-3.0)[0] == 0.0


@pytest.mark.parametrize("schedule", [
    Schedule(warmup_steps=4, outer_steps=10, train_steps_per_outer=2, final_steps=20),
    Schedule(warmup_steps=0, outer_steps=7, train_steps_per_outer=0, final_steps=3),
    Schedule(warmup_steps=5, outer_steps=3, train_steps_per_outer=1, freeze_beta=True),
])
def test_outer_steps_left_match_the_phases(schedule):
  for step in range(schedule.total_steps + 1):
    assert schedule.outer_steps_from(step) == sum(
        schedule.phase(s) == "outer" for s in range(step, schedule.total_steps)), step


def test_the_phase_plan_in_words():
  schedule = Schedule(warmup_steps=200, outer_steps=100, train_steps_per_outer=2, final_steps=400)
  assert schedule.describe() == "200 warm-up, 100 outer (+2 plain each), 400 final = 900 steps"
  fixed = Schedule(warmup_steps=1450, outer_steps=0, time_budget_s=2400.0)
  assert fixed.describe() == "1450 warm-up = 1450 steps, stop after 2400 s"
