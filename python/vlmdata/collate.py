"""LLaVA-style batches from loader samples, numpy only: padded ids, labels (-100), attention mask, position ids,
and the images un-patchified to `[B, 3, S, S]` floats normalized exactly as HF's `CLIPImageProcessor` (or the raw
patches)."""
import ctypes

import numpy as np

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200

#: mean and std per channel (VLMImage's `Normalization` presets).
PRESETS = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

_tables = {}


def normalization_table(normalize):
    """float32 [3, 256]: every uint8 value of each channel normalized as HF's image processors do it (rescale in
    float64, cast to float32, then subtract the mean and divide by the std in float32)."""
    key = normalize if isinstance(normalize, str) else (tuple(normalize[0]), tuple(normalize[1]))
    if key in _tables:
        return _tables[key]
    if isinstance(normalize, str):
        if normalize not in PRESETS:
            raise ValueError(f"normalize must be one of {sorted(PRESETS)} or (mean, std), not {normalize!r}")
        mean, std = PRESETS[normalize]
    else:
        mean, std = normalize
    rescaled = (np.arange(256, dtype=np.uint8).astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.asarray(mean, dtype=np.float32)[:, None]
    std = np.asarray(std, dtype=np.float32)[:, None]
    table = ((rescaled[None, :] - mean) / std).astype(np.float32)
    _tables[key] = table
    return table


def unpatchify(patches):
    """uint8 patches `[tiles, patches, p*p*3]` (row-major patches, channel-last pixels) → uint8 `[tiles, 3, S, S]`."""
    tiles, count, dim = patches.shape
    p = int(round((dim / 3) ** 0.5))
    g = int(round(count ** 0.5))
    if p * p * 3 != dim or g * g != count:
        raise ValueError(f"patches of shape {patches.shape} are not a square grid of square RGB patches")
    return (patches.reshape(tiles, g, g, p, p, 3).transpose(0, 5, 1, 3, 2, 4).reshape(tiles, 3, g * p, g * p))


def normalize_pixels(pixels, normalize):
    """uint8 array with channels on `axis` 1 of `[tiles, 3, ...]` → float32, normalized per channel."""
    table = normalization_table(normalize)
    out = np.empty(pixels.shape, np.float32)
    for c in range(3):
        out[:, c] = table[c][pixels[:, c]]
    return out


def normalize_patches(patches, normalize):
    """uint8 patches (channel-last, last axis p*p*3) → float32, normalized per channel."""
    table = normalization_table(normalize)
    flat = patches.reshape(-1, 3)
    return table[np.arange(3), flat].reshape(patches.shape)


def _image(pixels, image, normalize):
    if image == "pixel_values":
        tiles = unpatchify(pixels)
        return normalize_pixels(tiles, normalize) if normalize else tiles
    if image == "patches":
        return normalize_patches(pixels, normalize) if normalize else pixels
    raise ValueError(f"image must be 'pixel_values' or 'patches', not {image!r}")


def _fused_images(pixels, normalize, alloc):
    """`[B, tiles, 3, S, S]` float32 for rows of patches (None: a zero image) in one pass per image by the library
    (VLMImage's normalization tables), written straight into `alloc`'s buffer; None when this path does not apply
    (a normalization given as numbers, or images of different shapes)."""
    from ._lib import check, lib

    present = [p for p in pixels if p is not None]
    if not isinstance(normalize, str) or normalize not in PRESETS or not present:
        return None
    shape = present[0].shape
    if any(p.shape != shape for p in present):
        return None
    tiles, count, dim = shape
    side = int(round(count ** 0.5)) * int(round((dim / 3) ** 0.5))
    out = alloc((len(pixels), tiles, 3, side, side), np.float32)
    # one call for the whole batch: the library writes every image straight into `out`
    kept = [None if p is None else np.ascontiguousarray(p) for p in pixels]
    pointers = (ctypes.c_void_p * max(1, len(kept)))(*[None if p is None else p.ctypes.data for p in kept])
    err = ctypes.create_string_buffer(1024)
    check(lib().vlmdata_images_fill(pointers, len(kept), tiles, count, dim, normalize.encode(), out.ctypes.data,
                                    err, len(err)), err)
    return out[:, 0] if tiles == 1 else out


def _stack(images):
    """One array when every image has the same shape; a squeezed tile axis when each has one tile."""
    if not images:
        return None
    if all(i.shape == images[0].shape for i in images):
        stacked = np.stack(images)
        return stacked[:, 0] if stacked.shape[1] == 1 else stacked
    return images


def llava_collate_numpy(items, *, image="pixel_values", normalize="clip", pad_token_id=0, pad_to_multiple_of=1,
                        fused=True, alloc=None):
    """Batches loader samples (or packed rows) as LLaVA's trainer takes them, as numpy arrays.

    - `input_ids` int64 `[B, L]` padded with `pad_token_id` (`-200` where the image goes), `labels` padded with
      -100, `attention_mask`, `position_ids` (restarting in every packed segment);
    - `images`: with `image="pixel_values"` float32 `[B, 3, S, S]` (`[B, tiles, 3, S, S]` for anyres; a list when the
      tile counts differ), normalized with `normalize` ("clip", "siglip", "imagenet", (mean, std), or None for
      uint8); unpacked batches hold one image per row, zeros for a text-only row (as LLaVA does); packed rows
      hold their images in order. `image="patches"`: the patches `[B, patches, p*p*3]` instead;
    - packed rows add `cu_seqlens` int32 (segment boundaries over the batch, padding removed) and `segment_ids`;
    - `keys`, `is_pad`, `position` (this rank's samples consumed once this batch is used: pass it to
      `StreamingDataset.state_dict`).

    With `fused` (the default), normalized `pixel_values` of one shape are made by the library in one pass per
    image (VLMImage's tables) into a buffer from `alloc(shape, dtype)` (default `np.empty`); otherwise, and for
    the other options, numpy does it (the same values: both are tested against `CLIPImageProcessor`).
    """
    alloc = alloc or (lambda shape, dtype: np.empty(shape, dtype))
    packed = "segments" in items[0]
    rows = len(items)
    length = max(int(item["input_ids"].size) for item in items)
    multiple = max(1, int(pad_to_multiple_of))
    length = (length + multiple - 1) // multiple * multiple
    input_ids = np.full((rows, length), pad_token_id, np.int64)
    labels = np.full((rows, length), IGNORE_INDEX, np.int64)
    attention = np.zeros((rows, length), np.int64)
    positions = np.zeros((rows, length), np.int64)
    segment_ids = np.zeros((rows, length), np.int64)
    cu = [0]
    images = []
    fused_images = None
    if fused and image == "pixel_values" and normalize:
        rows_pixels = [p for item in items for p in item["pixels"]] if packed else [item["pixels"] for item in items]
        if packed or any(p is not None for p in rows_pixels):
            fused_images = _fused_images(rows_pixels, normalize, alloc)
    for r, item in enumerate(items):
        n = int(item["input_ids"].size)
        input_ids[r, :n] = item["input_ids"]
        labels[r, :n] = item["labels"]
        attention[r, :n] = 1
        if packed:
            positions[r, :n] = item["position_ids"]
            start = 0
            for s, seg in enumerate(item["segments"]):
                segment_ids[r, start:start + seg] = s + 1
                start += seg
                cu.append(cu[-1] + seg)
            if fused_images is None:
                images += [_image(p, image, normalize) for p in item["pixels"]]
        else:
            positions[r, :n] = np.arange(n)
            segment_ids[r, :n] = 1
            cu.append(cu[-1] + n)
            if fused_images is None:
                images.append(None if item["pixels"] is None else _image(item["pixels"], image, normalize))
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention, "position_ids": positions}
    if not packed and any(i is not None for i in images):
        shape = next(i for i in images if i is not None)
        images = [np.zeros_like(shape) if i is None else i for i in images]
    batch["images"] = fused_images if fused_images is not None else _stack([i for i in images if i is not None])
    if packed:
        batch["cu_seqlens"] = np.asarray(cu, np.int32)
        batch["segment_ids"] = segment_ids
        batch["keys"] = [k for item in items for k in item["keys"]]
        batch["is_pad"] = np.asarray([p for item in items for p in item["is_pad"]], bool)
    else:
        batch["keys"] = [item["key"] for item in items]
        batch["is_pad"] = np.asarray([item["is_pad"] for item in items], bool)
    batch["position"] = max(int(item["position"]) for item in items)
    return batch
