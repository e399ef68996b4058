from circuit_stability.checkpoints import checkpoint_schedule, pythia_schedule, tokens_seen


def test_pythia_schedule_has_154_checkpoints():
    steps = pythia_schedule()
    assert len(steps) == 154
    assert steps[:11] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert steps[11:13] == [1000, 2000] and steps[-1] == 143_000


def test_embedded_schedule():
    assert checkpoint_schedule(2000, 250, 512) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 750, 1000, 1250, 1500,
                                              1750, 2000]
    assert checkpoint_schedule(200, 100, log_until=4) == [0, 1, 2, 4, 100, 200]
    assert checkpoint_schedule(30, 100, log_until=4) == [0, 1, 2, 4, 30]  # the last step is always saved


def test_tokens_seen():
    assert tokens_seen(143_000, 1024, 2048) == 299_892_736_000  # Pythia's ~300B tokens
