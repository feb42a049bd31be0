"""Criteria, schedules and recipes from Python: a Pruner across steps, run_recipe, and SIGINT."""
import json
import os
import signal
import subprocess
import time

import pytest
import torch
import torchvision

import libprune

BUILD = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(libprune.__file__))))
RUNNER = os.path.join(BUILD, "libprune-run")


def _widths(model):
    return [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def _resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10)


def test_schedule_agp_values_and_errors():
    s = libprune.Schedule("agp", ratio=0.5, start_epoch=2, end_epoch=6)
    assert not s.prunes_at(2) and s.prunes_at(3)
    assert s.ratio_at(4) == pytest.approx(0.4375) and s.ratio_at(99) == pytest.approx(0.5)
    assert [e for e, _ in s.steps()] == [3, 4, 5, 6]
    with pytest.raises(ValueError, match="one_shot, iterative, agp"):
        libprune.Schedule("cubic")


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn_scale", "taylor", "fpgm", "lamp", "random"])
def test_every_criterion_prunes_along_a_schedule_to_the_one_shot_widths(criterion):
    x = torch.randn(2, 3, 32, 32)
    reference = _resnet()
    libprune.prune(reference, x, ratio=0.5, ignored_layers=[reference.fc])
    model = _resnet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pruner = libprune.Pruner(model, x, importance=criterion, ignored_layers=[model.fc])
    schedule = libprune.Schedule("iterative", ratio=0.5, start_epoch=0, steps=2)
    for epoch in range(2):
        model(x).sum().backward()  # gradients for taylor; momentum for the optimizer
        opt.step()
        if schedule.prunes_at(epoch):
            plan = pruner.step(ratio=schedule.ratio_at(epoch), optimizer=opt)
            assert plan.verification_pins == []
        opt.zero_grad()
    assert _widths(model) == _widths(reference)
    assert len(pruner.history) == 2
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 10)


def test_pruner_bad_input():
    model = _resnet()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="above max_ratio"):
        libprune.Pruner(model, x, ratio=0.8, max_ratio=0.5)
    with pytest.raises(ValueError, match=r"unknown importance \"l3\""):
        libprune.Pruner(model, x, importance="l3")
    pruner = libprune.Pruner(model, x, importance="taylor", ignored_layers=[model.fc])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="backward"):
        pruner.step()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _tiny_recipe(tmp_path, epochs=3):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({
        "name": "tiny", "model": {"name": "cifar_resnet20"},
        "data": {"kind": "synthetic", "synthetic_size": 8, "synthetic_channels": 1, "limit_train": 64, "limit_eval": 32},
        "training": {"epochs": epochs, "batch_size": 16, "optimizer": {"name": "sgd", "lr": 0.05}, "threads": 1},
        "pruning": [{"importance": "l1", "schedule": {"kind": "one_shot", "start_epoch": 1}, "ratio": 0.5,
                     "ignored_layers": ["fc"], "round_to": 8}],
        "report": {"latency_runs": 2, "latency_warmup": 1},
        "output_dir": str(tmp_path / "out")}))
    return path


def test_run_recipe_returns_the_summary(tmp_path):
    summary = libprune.run_recipe(_tiny_recipe(tmp_path), {"output_dir": str(tmp_path / "r")}, quiet=True)
    for side in ("dense", "pruned"):
        assert set(summary[side]) >= {"accuracy", "macs", "params", "size_bytes", "latency_ms_b1", "latency_ms_b32"}
    assert summary["pruned"]["macs"] * 3 < summary["dense"]["macs"]
    assert json.loads((tmp_path / "r" / "summary.json").read_text()) == summary
    lines = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [l["type"] for l in lines] == ["epoch", "prune", "epoch", "epoch"]
    assert {"loss", "top1", "lr", "params", "macs", "seconds"} <= set(lines[0])
    with pytest.raises(ValueError, match=r"training\.epoch: unknown key"):
        libprune.run_recipe(_tiny_recipe(tmp_path), {"training.epoch": 3})


def test_sigint_keeps_the_last_checkpoint_and_resume_finishes(tmp_path):
    recipe = _tiny_recipe(tmp_path, epochs=40)
    out = tmp_path / "out"
    proc = subprocess.Popen([RUNNER, str(recipe)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not (out / "last.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert (out / "last.ckpt").exists()
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, output
    assert "continue with --resume" in output
    assert not list(out.glob("*.tmp-*"))
    # The checkpoint loads: resuming (for a shorter run of the same recipe would be another
    # recipe, so resume as is) finishes with a summary.
    done = subprocess.run([RUNNER, str(recipe), "--resume"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert done.returncode == 0, done.stdout.decode()[-2000:]
    assert b"resuming" in done.stdout
    assert json.loads((out / "summary.json").read_text())["cuts"] == 1


def test_training_goes_on_while_the_last_graph_is_still_referenced():
    # A loop keeps `loss` (and so its graph, with each parameter's cached gradient accumulator)
    # alive when the next epoch prunes; the next backward must still work.
    model = _resnet()
    x = torch.randn(4, 3, 32, 32)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss = torch.nn.functional.cross_entropy(model(x), torch.zeros(4, dtype=torch.long))
    loss.backward()
    opt.step()
    libprune.prune(model, x[:1], ratio=0.5, ignored_layers=[model.fc], optimizer=opt)
    opt.zero_grad()
    loss2 = torch.nn.functional.cross_entropy(model(x), torch.zeros(4, dtype=torch.long))
    loss2.backward()
    opt.step()
    assert model.fc.weight.grad.shape == (10, 256) and loss.grad_fn is not None


def test_retain_freed_memory_is_exposed_and_clamps():
    # glibc (Debian): applied; the largest block size is clamped to glibc's 32 MiB cap, not refused.
    assert libprune.retain_freed_memory() is True
    assert libprune.retain_freed_memory(1 << 40) is True
    assert "retain_freed_memory" in libprune.__all__


def test_schedule_in_fractional_epochs_cuts_between_batches():
    s = libprune.Schedule("agp", ratio=0.5, start_epoch=4, end_epoch=4.5, frequency=0.125)
    assert [t for t, _ in s.steps()] == pytest.approx([4.125, 4.25, 4.375, 4.5])
    # In a plain loop: after batch b of n in epoch e, cut if a step fell in (e + b/n, e + (b+1)/n].
    due = s.steps_between(4 + 1 / 8, 4 + 2 / 8)
    assert len(due) == 1 and due[0][1] == pytest.approx(0.4375)
    assert s.next_step_after(4.25) == pytest.approx(4.375)
    with pytest.raises(ValueError, match="frequency must be > 0"):
        libprune.Schedule("agp", end_epoch=2, frequency=0)
