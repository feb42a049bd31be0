import json

import pytest

from libprune import report


def _run_folder(path):
    rows = [
        {"row": "dense", "label": "dense", "accuracy": 93.0, "params": 272186, "macs": 31021952, "size_bytes": 1129000,
         "latency_ms_b1": 1.5, "latency_ms_b32": 9.0},
        {"row": "pruned", "label": "pruned", "accuracy": 92.4, "params": 68642, "macs": 7783872, "size_bytes": 311000,
         "latency_ms_b1": 0.6, "latency_ms_b32": 4.8},
        {"row": "pruned_int8", "label": "pruned+int8 (QAT)", "accuracy": 93.1, "params": 68642, "macs": 7783872,
         "size_bytes": 89000, "latency_ms_b1": 0.25, "latency_ms_b32": 1.7},
        {"row": "pruned_int8_ptq", "label": "pruned+int8 (PTQ)", "accuracy": 92.4, "params": 68642, "macs": 7783872,
         "size_bytes": 89000},
    ]
    (path / "summary.json").write_text(json.dumps({"recipe": "hybrid", "model": "cifar_resnet20", "epochs": 3,
                                                    "cuts": 1, "quantization": "qat", "rows": rows}))
    lines = [{"type": "epoch", "epoch": 0, "top1": 80.0, "ratio": 0}, {"type": "prune", "epoch": 1, "ratio": 0.5},
             {"type": "epoch", "epoch": 1, "top1": 85.0, "ratio": 0.5}, {"type": "qat", "epoch": 2, "bits": 8},
             {"type": "epoch", "epoch": 2, "top1": 86.0, "ratio": 0.5}]
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_report_page_has_the_table_and_the_figures(tmp_path):
    _run_folder(tmp_path)
    page = open(report.write_report(str(tmp_path))).read()
    assert page.count("<tr>") == 5  # the header and four rows
    assert "pruned+int8 (QAT)" in page and "(6.00x)" in page  # dense / row latency at batch 1
    assert page.count("data:image/png;base64,") == 3  # accuracy per epoch, then batch 1 and batch 32
    assert report.main([str(tmp_path)]) == 0


def test_report_page_draws_the_sensitivity_scans(tmp_path):
    _run_folder(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    summary["sensitivity"] = {"ratios": [0.25, 0.5], "baseline": 93.0, "seconds": 4.0, "rows": [
        {"group": "conv1.weight", "modules": ["conv1", "bn1"], "size": 16, "kept": [12, 8], "metric": [92.5, 80.0]},
        {"group": "layer1.0.conv1.weight", "modules": ["layer1.0.conv1", "layer1.0.bn1"], "size": 16, "kept": [12, 8],
         "metric": [93.0, 91.0]}]}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    page = open(report.write_report(str(tmp_path))).read()
    assert page.count("data:image/png;base64,") == 4  # the three figures and the heat map
    summary["quant_sensitivity"] = {"bits": [8, 4], "baseline": 93.0, "all": [92.8, 70.0], "seconds": 2.0, "rows": [
        {"unit": "conv1 + bn1 + relu", "metric": [93.0, 90.5]}, {"unit": "fc", "metric": [92.9, 88.0]}]}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    page = open(report.write_report(str(tmp_path))).read()
    assert page.count("data:image/png;base64,") == 5  # and the quantization scan's


def test_report_of_a_folder_without_a_summary_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="summary.json"):
        report.write_report(str(tmp_path))
    assert report.main([]) == 2
