"""vlmdata from Python: the streaming loader of libVLMDataC.so through ctypes.

numpy only: `vlmdata.Loader`, `vlmdata.llava_collate_numpy`; PyTorch: `vlmdata.torch.StreamingDataset`,
`vlmdata.torch.llava_collate` (import vlmdata.torch; it needs torch).
"""
from ._lib import VLMDataError, library_path
from .collate import IGNORE_INDEX, IMAGE_TOKEN_INDEX, llava_collate_numpy, normalization_table, unpatchify
from .loader import Loader, Stream, topology

__all__ = ["Loader", "Stream", "VLMDataError", "library_path", "llava_collate_numpy", "normalization_table",
           "unpatchify", "topology", "IGNORE_INDEX", "IMAGE_TOKEN_INDEX"]
