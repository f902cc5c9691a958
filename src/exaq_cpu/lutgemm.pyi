from os import PathLike
from typing import Any, Literal, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

__all__ = ["BCQMatrix", "BCQStack", "quantize_weights", "quantize", "lut_gemm", "uniform_quantize", "preferred_table",
           "BATCH_CROSSOVER", "DEFAULT_PRECISION", "PRECISIONS"]

TILE: int
METHODS: tuple[str, ...]
DEFAULT_ITERS: int
BATCH_CROSSOVER: dict[int, int]
OUTLIER_GUARD: Optional[float]

#: a ggml type number, a gguf.GGMLQuantizationType (an IntEnum) or a name such as "Q4_1"
GGMLType = Union[int, str]
PRECISIONS: tuple[str, ...]
DEFAULT_PRECISION: str

class BCQMatrix:
    planes: npt.NDArray[np.uint8]
    alphas: npt.NDArray[np.float32]
    offsets: npt.NDArray[np.float32]
    shape: tuple[int, int]
    bits: int
    group_size: Optional[int]
    method: Optional[str]
    def __init__(self, planes: npt.ArrayLike, alphas: npt.ArrayLike, offsets: npt.ArrayLike,
                 shape: tuple[int, int], bits: int, group_size: Optional[int],
                 method: Optional[str] = ...) -> None: ...
    @property
    def in_features(self) -> int: ...
    @property
    def out_features(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    def dequantize(self) -> npt.NDArray[np.float32]: ...
    def packed_int8(self) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32], npt.NDArray[np.float32]]: ...
    @classmethod
    def from_uniform(cls, codes: npt.ArrayLike, scale: npt.ArrayLike, zero_point: npt.ArrayLike,
                     group_size: Optional[int] = ..., bits: Optional[int] = ...) -> "BCQMatrix": ...
    @classmethod
    def from_gguf(cls, tensor: Any, ggml_type: Optional[GGMLType] = ...,
                  shape: Optional[tuple[int, int]] = ...) -> Union["BCQMatrix", "BCQStack"]: ...
    def save(self, path: Union[str, PathLike[str]]) -> None: ...
    @classmethod
    def load(cls, path: Union[str, PathLike[str]]) -> "BCQMatrix": ...

class BCQStack:
    parts: tuple[BCQMatrix, ...]
    shape: tuple[int, int]
    bits: int
    group_size: Optional[int]
    method: Optional[str]
    def __init__(self, parts: Sequence[BCQMatrix], method: Optional[str] = ...) -> None: ...
    @property
    def in_features(self) -> int: ...
    @property
    def out_features(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    def dequantize(self) -> npt.NDArray[np.float32]: ...

def uniform_quantize(W: npt.ArrayLike, bits: int = ..., group_size: Optional[int] = ...
                     ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32], npt.NDArray[np.float32]]: ...
def quantize(W: npt.ArrayLike, bits: int = ..., group_size: Optional[int] = ...,
             method: Literal["greedy", "alternating", "uniform"] = ...,
             iters: Optional[int] = ...) -> BCQMatrix: ...
def quantize_weights(W: npt.ArrayLike, bits: int = ..., group_size: Optional[int] = ...,
             method: Literal["greedy", "alternating", "uniform"] = ...,
             iters: Optional[int] = ...) -> BCQMatrix: ...
def lut_gemm(x: npt.ArrayLike, Wq: Union[BCQMatrix, BCQStack], *, out: Optional[npt.NDArray[np.float32]] = ...,
             threads: Optional[int] = ..., method: Literal["auto", "lut", "dequantize"] = ...,
             table: Literal["auto", "mu4", "mu8"] = ...,
             precision: Optional[Literal["int8", "exact"]] = ...,
             backend: Optional[str] = ...) -> npt.NDArray[np.float32]: ...
def preferred_table() -> Literal["mu4", "mu8"]: ...
