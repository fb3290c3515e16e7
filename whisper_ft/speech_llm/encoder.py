"""The encoder of any Whisper model whisper-ft can name, run on the real audio length.

transformers' ``WhisperEncoder.forward`` insists on 30 s of mel frames (3000). Like SLAM-LLM we call
its submodules ourselves: the two convolutions on the real number of frames (made even), the first
``T`` positional embeddings, the layers and the final layer norm. A 4 s clip then costs about
4/30 of a padded one.

Batches are exact: each clip's mel frames are padded with zeros, the first convolution's output
is zeroed past each clip's length (what its own zero padding would give), and padded positions are
masked out of self-attention, so a clip's encoding does not depend on the clips batched with it
(up to float rounding). That is what makes cached encoder outputs and batched decoding agree with
clip-by-clip ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_ft.core.errors import ModelNotFoundError, WhisperFtError

MEL_FRAMES_PER_SECOND = 100  # Whisper: hop of 160 samples at 16 kHz
ENCODER_FRAMES_PER_SECOND = 50  # after the stride-2 convolution


def mel_features(feature_extractor, audio: np.ndarray) -> np.ndarray:
    """Log-mel features ``[n_mels, T]`` of one clip, unpadded (``T`` = samples / 160, made even)."""
    from whisper_ft.core.audio import SAMPLE_RATE

    audio = np.asarray(audio, dtype=np.float32)
    if audio.size < 2 * 160:  # a clip of under 20 ms: pad so the convolutions have two frames
        audio = np.pad(audio, (0, 2 * 160 - audio.size))
    out = feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="np", padding="longest",
                            truncation=False)
    feats = out["input_features"][0].astype(np.float32, copy=False)
    if feats.shape[-1] % 2:
        feats = np.pad(feats, ((0, 0), (0, 1)))
    return feats


def encoder_length(mel_frames: int) -> int:
    """Encoder positions for ``mel_frames`` (even) mel frames."""
    return (int(mel_frames) + 1) // 2


@dataclass
class LoadedEncoder:
    encoder: object  # a WhisperEncoder module
    feature_extractor: object
    name: str  # what the user asked for
    path: str  # where its weights came from
    fingerprint: str  # changes when the weights change (keys the encoder-output cache)


def _fingerprint(path: Path | str) -> str:
    import hashlib

    path = Path(path)
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) if path.is_dir() else []
    parts = [str(path.resolve()) if path.exists() else str(path)]
    for f in files:
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def load_whisper_encoder(name: str, *, dtype=None, device: str = "cpu") -> LoadedEncoder:
    """The frozen encoder (and feature extractor) of Whisper model ``name``.

    A name that does not resolve, or a folder that is not a Whisper model, is one clear error.
    """
    from whisper_ft.models.loading import load_whisper
    from whisper_ft.models.registry import resolve_model

    try:
        source = resolve_model(name)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(f"--encoder {name}: {exc}") from exc
    try:
        loaded = load_whisper(name, dtype=dtype, device=device, source=source)
    except (OSError, ValueError, KeyError) as exc:
        raise WhisperFtError(f"--encoder {name} is not a loadable Whisper model ({exc}); give a Whisper model name "
                             "or folder") from exc
    model = loaded.model
    if source.kind == "adapter":  # a LoRA fine-tune of Whisper: bake the adapter into the encoder
        model = model.merge_and_unload()
    encoder = model.get_encoder()
    encoder.requires_grad_(False)
    encoder.eval()
    return LoadedEncoder(encoder=encoder, feature_extractor=loaded.processor.feature_extractor, name=name,
                         path=str(source.path), fingerprint=_fingerprint(loaded.hf_path))


def pad_features(features: list[np.ndarray]):
    """Stack unpadded mel features ``[n_mels, T_i]`` into ``[B, n_mels, T_max]`` (zeros) + lengths."""
    import torch

    lengths = torch.tensor([f.shape[-1] for f in features], dtype=torch.long)
    out = torch.zeros(len(features), features[0].shape[0], int(lengths.max()), dtype=torch.float32)
    for i, f in enumerate(features):
        out[i, :, : f.shape[-1]] = torch.from_numpy(np.ascontiguousarray(f))
    return out, lengths


def encode(encoder, features, lengths):
    """Run Whisper ``encoder`` on mel ``features [B, n_mels, T]`` of ``lengths`` frames each.

    Returns ``(hidden [B, T/2, d], encoder_lengths [B])``. See the module docstring for why the
    batch is exact; frames beyond 30 s raise (there are only 1500 positional embeddings).
    """
    import torch
    from torch import nn

    if features.shape[-1] % 2:
        features = nn.functional.pad(features, (0, 1))
    n_positions = encoder.embed_positions.weight.shape[0]
    out_len = (lengths + 1) // 2
    t_out = features.shape[-1] // 2
    if t_out > n_positions:
        raise WhisperFtError(f"audio of {features.shape[-1] / MEL_FRAMES_PER_SECOND:.1f} s is longer than the Whisper "
                             f"encoder's {n_positions / ENCODER_FRAMES_PER_SECOND:.0f} s")
    dtype = encoder.conv1.weight.dtype
    device = encoder.conv1.weight.device
    features, lengths, out_len = features.to(device=device, dtype=dtype), lengths.to(device), out_len.to(device)
    frames = torch.arange(features.shape[-1], device=device)
    even_len = out_len * 2
    x = nn.functional.gelu(encoder.conv1(features))
    x = x * (frames[None, :] < even_len[:, None]).to(x.dtype)[:, None, :]  # = each clip's own zero padding
    x = nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
    x = x + encoder.embed_positions.weight[:t_out].to(x.dtype)
    valid = torch.arange(t_out, device=device)[None, :] < out_len[:, None]
    mask = None
    if not bool(valid.all()):
        mask = torch.zeros(valid.shape, dtype=x.dtype, device=device)
        mask = mask.masked_fill(~valid, torch.finfo(x.dtype).min)[:, None, None, :]
    for layer in encoder.layers:
        x = layer(x, mask)
        if isinstance(x, tuple):  # older transformers return (hidden_states, attn_weights)
            x = x[0]
    x = encoder.layer_norm(x)
    return x, out_len
