"""Put llama.cpp's own HF → GGUF converter beside the virtualenv: the reference of tests/parity/test_llamacpp_gguf.py.

The converter (convert_hf_to_gguf.py, its conversion/ package and the gguf-py it imports) is not in any wheel;
it ships in llama-cpp-python's source distribution under vendor/llama.cpp. This takes the sdist of the
llama-cpp-python version that is installed, so the converter matches the llama.cpp that runs the exports,
and extracts those files only. `make test` runs it at install time; tests never download anything.

    python tools/fetch_llamacpp_converter.py .venv/llama.cpp
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

WANTED = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def main(target: Path) -> None:
    version = importlib.metadata.version("llama_cpp_python")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"llama-cpp-python=={version}",
                "-d",
                tmp,
            ],
            check=True,
        )
        (sdist,) = Path(tmp).glob("*.tar.gz")
        staging = Path(tmp) / "out"
        with tarfile.open(sdist) as archive:
            members = []
            for member in archive.getmembers():
                parts = member.name.split("/vendor/llama.cpp/", 1)
                if len(parts) == 2 and parts[1].startswith(WANTED) and (member.isfile() or member.isdir()):
                    member.name = parts[1]
                    members.append(member)
            archive.extractall(staging, members=members, filter="data")
        if not (staging / "convert_hf_to_gguf.py").is_file():
            raise SystemExit(f"llama-cpp-python {version}: no vendor/llama.cpp/convert_hf_to_gguf.py in {sdist.name}")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(staging, target)
        (target / "VERSION").write_text(f"llama-cpp-python {version}\n")
    print(f"llama.cpp converter of llama-cpp-python {version} in {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ".venv/llama.cpp"))
