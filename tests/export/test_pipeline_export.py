"""The pipeline's export stage: GGUF + Modelfile from the previous stage's model, recorded in the report."""

import json

import yaml

from strop.pipeline import run_pipeline


def test_export_stage_writes_gguf_and_modelfile(tiny_llama, tmp_path):
    spec = {
        "base_model": str(tiny_llama),
        "output_dir": str(tmp_path / "pipe"),
        "stages": [{"name": "export", "kind": "export", "gguf": "f16"}],
    }
    path = tmp_path / "pipeline.yml"
    path.write_text(yaml.safe_dump(spec))
    report = run_pipeline(path)
    record = json.loads((tmp_path / "pipe" / "export" / "stage.json").read_text())
    assert record["gguf"].endswith("model-f16.gguf") and (tmp_path / "pipe" / "export" / "model-f16.gguf").is_file()
    assert "FROM ./model-f16.gguf" in (tmp_path / "pipe" / "export" / "Modelfile").read_text()
    assert "model-f16.gguf" in report.read_text()
