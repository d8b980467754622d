"""ctypes bindings of libVLMDataC.so (the C ABI in include/vlmdata.h)."""
import ctypes
import ctypes.util
import os
import pathlib

ABI_VERSION = 2
LIBRARY_NAME = "libVLMDataC.so"

ERROR_NAMES = {
    -1: "buffer too small", 1: "bad input", 2: "not found", 3: "I/O error", 4: "unsupported", 5: "conflict",
    6: "invalid argument", 7: "network error", 8: "corrupt", 9: "gate failed", 10: "error",
}


class VLMDataError(RuntimeError):
    """An error the library reported: `code` (see include/vlmdata.h) and its message."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class PlanInfo(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in
                ("epoch_samples", "rank_samples", "epoch", "consumed", "world_size", "rank")]


class StreamOptions(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in
                ("epoch", "worker", "workers", "chunk", "threads", "prefetch", "pack_context", "pack_rows")]


class BatchInfo(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in
                ("samples", "tokens", "pixel_bytes", "key_bytes", "meta_bytes", "rank_taken", "skipped", "overlong")]


class BatchBuffers(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in
                ("input_ids", "labels", "token_offsets", "pixels", "pixel_offsets", "pixel_shapes", "image_tokens",
                 "indices", "is_pad", "datasets", "keys", "meta", "meta_offsets")]


def library_path():
    """`$VLMDATA_LIB`, else the library beside this package, else the system's search path."""
    env = os.environ.get("VLMDATA_LIB")
    if env:
        if not os.path.exists(env):
            raise OSError(f"VLMDATA_LIB={env}: no such file (build it with `swift build -c release --product VLMDataC`)")
        return env
    beside = pathlib.Path(__file__).resolve().parent / LIBRARY_NAME
    if beside.exists():
        return str(beside)
    found = ctypes.util.find_library("VLMDataC")
    if found:
        return found
    raise OSError(f"cannot find {LIBRARY_NAME}: set VLMDATA_LIB to its path, or copy it next to {__file__} "
                  "(build it with `swift build -c release --product VLMDataC`)")


_lib = None


def lib():
    """The loaded library, its functions typed (loaded once per process)."""
    global _lib
    if _lib is not None:
        return _lib
    path = library_path()
    handle = ctypes.CDLL(path)
    i32, i64, p, size = ctypes.c_int32, ctypes.c_int64, ctypes.c_void_p, ctypes.c_size_t
    cstr, err = ctypes.c_char_p, ctypes.c_char_p
    handle.vlmdata_abi_version.restype = i32
    handle.vlmdata_abi_version.argtypes = []
    handle.vlmdata_topology.restype = i32
    handle.vlmdata_topology.argtypes = [i64, i64, ctypes.POINTER(i64), err, size]
    handle.vlmdata_loader_open.restype = i32
    handle.vlmdata_loader_open.argtypes = [cstr, ctypes.POINTER(p), err, size]
    handle.vlmdata_loader_free.restype = None
    handle.vlmdata_loader_free.argtypes = [p]
    handle.vlmdata_loader_plan.restype = i32
    handle.vlmdata_loader_plan.argtypes = [p, i64, cstr, ctypes.POINTER(PlanInfo), err, size]
    handle.vlmdata_loader_state.restype = i32
    handle.vlmdata_loader_state.argtypes = [p, i64, cstr, i64, ctypes.c_char_p, size, ctypes.POINTER(size), err, size]
    handle.vlmdata_stream_open.restype = i32
    handle.vlmdata_stream_open.argtypes = [p, ctypes.POINTER(StreamOptions), cstr, ctypes.POINTER(p), err, size]
    handle.vlmdata_stream_free.restype = None
    handle.vlmdata_stream_free.argtypes = [p]
    handle.vlmdata_stream_next.restype = i32
    handle.vlmdata_stream_next.argtypes = [p, i64, ctypes.POINTER(BatchInfo), err, size]
    handle.vlmdata_stream_copy.restype = i32
    handle.vlmdata_stream_copy.argtypes = [p, ctypes.POINTER(BatchBuffers), err, size]
    handle.vlmdata_patches_to_image.restype = i32
    handle.vlmdata_patches_to_image.argtypes = [p, i64, i64, i64, cstr, p, err, size]
    handle.vlmdata_images_fill.restype = i32
    handle.vlmdata_images_fill.argtypes = [ctypes.POINTER(p), i64, i64, i64, i64, cstr, p, err, size]
    version = handle.vlmdata_abi_version()
    if version != ABI_VERSION:
        raise OSError(f"{path} has C ABI version {version}; this package needs {ABI_VERSION}")
    _lib = handle
    return handle


def check(code, err):
    """Raises VLMDataError for a nonzero return code, with the library's message."""
    if code != 0:
        message = err.value.decode("utf-8", "replace") or ERROR_NAMES.get(code, "error")
        raise VLMDataError(code, message)
