"""Pushing a finished run to the Hugging Face Hub, with Axolotl's keys: `hub_model_id` names the repository
and, as in Axolotl, setting it is what turns the push on (`push_to_hub: false` turns it off again).

Why these shapes:
- The push comes after training, so everything that can be known before is checked before a model is
  loaded: the repository id, a token (HF_TOKEN or `hf auth login`, found the way huggingface_hub finds
  it) and the endpoint's answer to whoami with it. A run with no token fails in a second, not after
  hours of training.
- The upload is one commit of what the run wrote (its manifest's names): the adapter or model, the
  tokenizer, PEFT's model card (README.md, its base_model made a Hub id), strop_config.yml, metrics and
  the loss curve. Checkpoints go only when `hub_strategy`
  asks for them (`checkpoint`: the newest as `last-checkpoint/`, `all_checkpoints`: every one), as in
  transformers' Trainer. strop pushes once, when the run is done; there are no uploads during training.
- A failed push never touches the local output: the error names the repository, the cause and the
  complete folder, which can be pushed again by hand.
- HF_ENDPOINT is read when the push happens (huggingface_hub reads it once, at import).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strop import manifest
from strop.config import Config
from strop.errors import StropError
from strop.safe_io import is_temp_name
from strop.train import checkpoint as ckpt


@dataclass(frozen=True)
class HubTarget:
    """Where a run is pushed."""

    repo_id: str
    private: bool
    revision: str | None
    strategy: str

    def describe(self) -> str:
        where = self.repo_id + (f"@{self.revision}" if self.revision else "")
        extra = {
            "checkpoint": ", with the newest checkpoint",
            "all_checkpoints": ", with every checkpoint",
            "every_save": ", once, after training",
        }
        return f"{where} ({'private' if self.private else 'public'}{extra.get(self.strategy, '')})"


def target(cfg: Config) -> HubTarget | None:
    """The repository this run pushes to, or None; a bad combination of the hub keys is a StropError."""
    repo = getattr(cfg, "hub_model_id", None)
    push = getattr(cfg, "push_to_hub", None)
    if push is False or (not repo and not push):
        return None
    if not repo:
        raise StropError("push_to_hub: true needs hub_model_id, the repository to push to (e.g. your-name/my-model)")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as err:
        raise StropError(f"hub_model_id: {repo!r} is not a Hub repository id: {err}") from None
    strategy = getattr(cfg, "hub_strategy", None) or "end"
    return HubTarget(repo, bool(getattr(cfg, "hub_private_repo", True)), getattr(cfg, "hub_revision", None), strategy)


def endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _api() -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint())


def _cause(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) < 400 else text[:400] + "..."


def check_access(hub: HubTarget) -> None:
    """Fail before training when the push could not happen: no token, a token the endpoint rejects, or
    a namespace the token's user is not part of."""
    from huggingface_hub import get_token

    token = get_token()
    if token is None:
        raise StropError(
            f"hub_model_id {hub.repo_id}: no Hugging Face token to push with: set HF_TOKEN or run "
            "`hf auth login` (or drop hub_model_id / set push_to_hub: false)"
        )
    try:
        who = _api().whoami(token=token)
    except Exception as err:  # any failure of the client (HTTP, network, offline mode) stops the run here
        raise StropError(f"hub_model_id {hub.repo_id}: whoami at {endpoint()} failed: {_cause(err)}") from err
    name = str(who.get("name", ""))
    namespace = hub.repo_id.split("/")[0] if "/" in hub.repo_id else name
    allowed = {name, *(str(org.get("name")) for org in who.get("orgs") or [])}
    if namespace.casefold() not in {n.casefold() for n in allowed}:
        raise StropError(
            f"hub_model_id {hub.repo_id}: the token belongs to {name!r}, who is not in {namespace!r} "
            f"(namespaces: {', '.join(sorted(allowed))})"
        )


#: The Hub models behind strop's aliases, for the model card's base_model.
_HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def _is_local(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or Path(name).expanduser().exists()


def model_card(readme: Path, base_model: str) -> bytes:
    """README.md as pushed. PEFT's model card names the base model by the folder it was loaded from, and
    the Hub refuses a commit whose card metadata names a local path; name the Hub model instead (the
    config's hub id, or the model behind strop's alias), or drop the claim when there is none."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(readme)
    local = card.data.base_model
    if not isinstance(local, str) or not _is_local(local):
        return readme.read_bytes()
    hub_id = _HUB_IDS.get(base_model.lower(), base_model)
    known = not _is_local(hub_id) and hub_id.count("/") == 1
    tags = [tag.replace(local, hub_id) if known else tag for tag in card.data.tags or [] if known or local not in tag]
    card.data.tags = tags or None
    card.data.base_model = hub_id if known else None
    return str(card).encode()


def files_to_push(output_dir: Path, strategy: str) -> list[tuple[str, Path]]:
    """(path in the repository, local file) for every file the run wrote that the push carries: the
    manifest's names without checkpoints, plus the checkpoints `strategy` asks for."""
    checkpoints = ckpt.list_checkpoints(output_dir)
    skip = {manifest.MANIFEST, *(p.name for p in checkpoints)}
    tops = [
        (name, output_dir / name)
        for name in manifest.read(output_dir) or []
        if name not in skip and not is_temp_name(name) and (output_dir / name).exists()
    ]
    if strategy == "checkpoint" and checkpoints:
        tops.append(("last-checkpoint", checkpoints[-1]))
    elif strategy == "all_checkpoints":
        tops += [(p.name, p) for p in checkpoints]
    files = []
    for remote, local in tops:
        if local.is_file():
            files.append((remote, local))
        else:
            files += [
                (f"{remote}/{p.relative_to(local).as_posix()}", p) for p in sorted(local.rglob("*")) if p.is_file()
            ]
    return files


def push(hub: HubTarget, output_dir: Path, base_model: str) -> str:
    """Create the repository (if new) and commit the run's files to it in one commit; returns the
    commit's URL. Any failure is a StropError that says the local output is complete."""
    from huggingface_hub import CommitOperationAdd

    files = files_to_push(output_dir, hub.strategy)
    contents: dict[str, str | bytes] = {remote: str(local) for remote, local in files}
    if "README.md" in contents:
        contents["README.md"] = model_card(output_dir / "README.md", base_model)
    size = sum(path.stat().st_size for _, path in files)
    print(f"strop: pushing {len(files)} files ({size / 2**20:.1f} MiB) to the Hub: {hub.describe()} at {endpoint()}")
    api = _api()
    try:
        repo_id = api.create_repo(hub.repo_id, private=hub.private, exist_ok=True).repo_id
        if hub.revision:
            api.create_branch(repo_id, branch=hub.revision, exist_ok=True)
        operations = [
            CommitOperationAdd(path_in_repo=remote, path_or_fileobj=data) for remote, data in contents.items()
        ]
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=f"strop train: {output_dir.name}",
            revision=hub.revision,
        )
    except Exception as err:  # HTTP, network or client errors alike: the training result is kept
        raise StropError(
            f"push to the Hub failed: {hub.repo_id} at {endpoint()}: {_cause(err)}; the local output is complete "
            f"at {output_dir.resolve()} (push it with `hf upload {hub.repo_id} {output_dir.resolve()}`)"
        ) from err
    print(f"strop: pushed to {info.commit_url}")
    return str(info.commit_url)
