"""The preparation on Ray's workers (`search.driver.workers`): on a Ray that advertises two GPUs
it does not have, each worker gets a GPU of its own, falls back to the CPU, and makes the same
pseudo-labels and screen scores as this process does."""

from __future__ import annotations

import time

import numpy as np
import pytest
import ray
from tiny import tiny_space

from search.driver.preflight import prepare
from search.driver.workers import BaseWorkers
from search.space.config import config_from_dict
from search.strategy.screen import screen_students

PSEUDO_EXAMPLES = 20  # 16 shards: both workers get some


@pytest.fixture(scope="module")
def ray_with_two_gpus():
    ray.init(
        num_cpus=2,
        num_gpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


def gpu_config(model):
    space = tiny_space(model, resources={"cpus": 1, "gpus": 1})
    space["data"]["pseudo_examples"] = PSEUDO_EXAMPLES
    space["train"]["targets"] = ["gold", "pseudo"]
    space["sampler"] = {"screen": 6}
    return config_from_dict(space)


def test_workers_on_advertised_gpus_make_what_this_process_makes(
    ray_with_two_gpus, tiny_t5_path, tmp_path
):
    config = gpu_config(tiny_t5_path)
    here = prepare(config, pseudo_label_cache=tmp_path / "here")
    workers = BaseWorkers(config)
    try:
        there = prepare(config, pseudo_label_cache=tmp_path / "there", workers=workers)
        sent = []  # what the screen sends the workers: the evaluation pairs, nothing else

        def zero_shot(students, head):
            sent.append(head)
            return workers.zero_shot(there.base, students, head)

        screened_there, _ = screen_students(config, there, zero_shot)
        places = workers.places
        described = workers.describe()
    finally:
        workers.close()

    # One GPU each, as a trial would get it; torch finds none, so they run on the CPU.
    assert sorted(place["cuda_visible_devices"] for place in places) == ["0", "1"]
    assert {place["device"] for place in places} == {"cpu"}
    assert described == "on 2 workers (cpu)"
    assert there.pseudo_labels == "generated on 2 workers (cpu)"
    assert here.pseudo_labels == "generated in this process"
    assert len(there.data.pseudo_labels) == PSEUDO_EXAMPLES
    assert np.array_equal(there.data.pseudo_sources, here.data.pseudo_sources)
    assert [list(r) for r in there.data.pseudo_labels] == [list(r) for r in here.data.pseudo_labels]

    (head,) = sent
    assert (len(head.train_input_ids), len(head.train_labels), head.pseudo_labels) == (0, 0, None)
    assert [list(r) for r in head.eval_input_ids] == [list(r) for r in there.data.eval_input_ids][
        : config.sampler.screen
    ]
    screened_here, _ = screen_students(config, here)
    assert [s.values for s in screened_there] == [s.values for s in screened_here]
    assert [s.params for s in screened_there] == [s.params for s in screened_here]
    losses = [s.loss for s in screened_there]
    assert losses == pytest.approx([s.loss for s in screened_here], rel=1e-5)


def test_closed_workers_give_their_resources_back(ray_with_two_gpus, tiny_t5_path):
    config = gpu_config(tiny_t5_path)
    prepared = prepare(config)
    workers = BaseWorkers(config)
    # The estimate probes on one worker first; the labels after it get every trial slot.
    assert workers.start(prepared.base, work=1) == 1
    assert workers.start(prepared.base, work=5) == 2  # as many as trials run at once
    assert len(workers.actors) == len(workers.places) == 2
    assert ray.available_resources().get("GPU", 0) == 0
    workers.close()
    deadline = time.monotonic() + 60  # ray.kill returns at once; the release follows
    while ray.available_resources().get("GPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    resources = ray.available_resources()
    assert (resources.get("GPU"), resources.get("CPU")) == (2.0, 2.0)


@ray.remote
def _pick_targets(data, targets):
    """What a trial does with the data it is sent: the rows it trains on."""
    picked = data.with_targets(targets)
    sent = (data.train_input_ids.values, data.train_labels.values)
    return {
        "read_only": not any(v.flags.writeable for v in sent),  # Ray's object store, mapped
        "shared": all(
            np.shares_memory(rows.values, stored)
            for rows, stored in zip(
                (picked.train_input_ids, picked.train_labels), sent, strict=True
            )
        ),
        "pairs": [
            (a.tolist(), b.tolist())
            for a, b in zip(picked.train_input_ids, picked.train_labels, strict=True)
        ],
    }


def test_a_trial_trains_on_the_sent_data_without_a_copy(ray_with_two_gpus, tiny_t5_path, tmp_path):
    data = prepare(gpu_config(tiny_t5_path), pseudo_label_cache=tmp_path).data
    sent = ray.put(data)
    for targets in ("pseudo", "both"):
        there = ray.get(_pick_targets.remote(sent, targets))
        here = data.with_targets(targets)
        assert there["read_only"] and there["shared"]
        assert there["pairs"] == [
            (a.tolist(), b.tolist())
            for a, b in zip(here.train_input_ids, here.train_labels, strict=True)
        ]
