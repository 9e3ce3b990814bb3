"""The prefetch tuner: enough episodes ahead to cover their loading time, within bounds."""

from flows.campaign.prefetch import PrefetchTuner


def test_floor_until_both_latencies_are_known():
    tuner = PrefetchTuner(floor=1, ceiling=4)
    assert tuner.prefetch("p", 1) == 1
    tuner.ready_after("p", 12.0)
    assert tuner.prefetch("p", 1) == 1


def test_slow_loading_short_episodes_need_more_ahead():
    tuner = PrefetchTuner(floor=1, ceiling=4)
    tuner.ready_after("p", 12.0)
    tuner.held_for("p", 5.0)
    assert tuner.prefetch("p", 1) == 3  # ceil(12 / 5)
    assert tuner.prefetch("p", 2) == 4  # ceil(2 x 12 / 5) = 5, capped


def test_fast_loading_long_episodes_keep_the_floor():
    tuner = PrefetchTuner(floor=1, ceiling=4)
    tuner.ready_after("p", 3.0)
    tuner.held_for("p", 60.0)
    assert tuner.prefetch("p", 1) == 1


def test_every_server_of_a_pool_gets_one_ahead():
    """Two servers, each with its next episode loaded: a pool's floor and ceiling are per server."""
    tuner = PrefetchTuner(floor=1, ceiling=2)
    assert tuner.prefetch("p", 2, servers=2) == 2
    tuner.ready_after("p", 3.0)
    tuner.held_for("p", 60.0)
    assert tuner.prefetch("p", 2, servers=2) == 2
    tuner.ready_after("p", 600.0)
    assert tuner.prefetch("p", 2, servers=2) == 4  # capped at 2 per server


def test_moving_average_follows_new_samples():
    tuner = PrefetchTuner(floor=0, ceiling=10)
    tuner.held_for("p", 10.0)
    tuner.ready_after("p", 10.0)
    for _ in range(20):
        tuner.ready_after("p", 40.0)
    assert tuner.prefetch("p", 1) == 4
    tuner.held_for("p", 0.0)  # no hold time recorded: ignored
    assert tuner.prefetch("p", 1) == 4


def test_the_campaign_reads_its_runs_less_often_when_episodes_are_long():
    tuner = PrefetchTuner()
    assert tuner.tick(0.5) == 0.5  # nothing ended yet
    tuner.held_for("short", 5.0)
    assert tuner.tick(0.5) == 0.5  # 5 s / 20 is below the floor
    tuner.held_for("short", 30.0)
    tuner.held_for("long", 30.0)
    assert tuner.tick(0.5) == 30.0 * 0.3 / 20 + 5.0 * 0.7 / 20  # the shorter pool's moving average, / 20
    tuner.held_for("short", 1800.0)
    assert tuner.tick(0.5) == 1.5  # the shortest pool sets the pace
    tuner.held_for("long", 1800.0)
    assert tuner.tick(0.5) == 2.0  # at most 2 s
