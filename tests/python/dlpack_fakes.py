"""Hand-made DLPack producers (ctypes): capsules whose metadata we control, deleters that count.

Used to test that grpokit consumes capsules exactly as the DLPack specification says, and that lying
metadata (null data, negative extents, too many dimensions, unknown dtypes or devices) is refused.
"""

from __future__ import annotations

import ctypes

import numpy as np


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


def _managed_tensor(name, fields):
    """A managed-tensor struct and its deleter type (a function of a pointer to the struct itself);
    the field typed None is the deleter."""
    struct = type(name, (ctypes.Structure,), {})
    deleter = ctypes.CFUNCTYPE(None, ctypes.POINTER(struct))
    struct._fields_ = [(n, deleter if t is None else t) for n, t in fields]
    return struct, deleter


DLManagedTensorVersioned, VERSIONED_DELETER = _managed_tensor(
    "DLManagedTensorVersioned",
    [
        ("version", DLPackVersion),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", None),
        ("flags", ctypes.c_uint64),
        ("dl_tensor", DLTensor),
    ],
)
DLManagedTensor, LEGACY_DELETER = _managed_tensor(
    "DLManagedTensor", [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", None)]
)

_PyCapsule_New = ctypes.pythonapi.PyCapsule_New
_PyCapsule_New.restype = ctypes.py_object
_PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]

_DTYPES = {
    np.dtype(np.float64): (2, 64),
    np.dtype(np.float32): (2, 32),
    np.dtype(np.float16): (2, 16),
    np.dtype(np.int64): (0, 64),
    np.dtype(np.int32): (0, 32),
    np.dtype(np.bool_): (6, 8),
}

_CAPSULE_NAMES = {True: b"dltensor_versioned", False: b"dltensor"}


class FakeProducer:
    """A __dlpack__ producer over a NumPy buffer, with overridable metadata and a counting deleter.

    The capsule has no destructor of its own: whoever consumes it must call the deleter, exactly once.
    """

    def __init__(
        self,
        arr: np.ndarray,
        *,
        versioned=True,
        shape=None,
        strides=None,
        ndim=None,
        dtype_code=None,
        dtype_bits=None,
        lanes=1,
        null_data=False,
        device_type=1,
        read_only=False,
        major=1,
        name=None,
    ):
        self.arr = arr
        self.shape = tuple(arr.shape if shape is None else shape)
        self.dtype = arr.dtype
        self.versioned = versioned
        self.deleted = 0
        self.made = 0
        self._keep = []
        code, bits = _DTYPES[arr.dtype]
        self._meta = dict(
            shape=self.shape,
            strides=strides if strides is not None else tuple(s // arr.itemsize for s in arr.strides),
            ndim=len(self.shape) if ndim is None else ndim,
            code=code if dtype_code is None else dtype_code,
            bits=bits if dtype_bits is None else dtype_bits,
            lanes=lanes,
            null_data=null_data,
            device_type=device_type,
            read_only=read_only,
            major=major,
        )
        self._name = name

    def __dlpack_device__(self):
        return (self._meta["device_type"], 0)

    def __dlpack__(self, stream=None, max_version=None, **_):
        if not self.versioned and max_version is not None:
            raise TypeError("this producer predates max_version")
        m = self._meta
        shape = (ctypes.c_int64 * max(len(m["shape"]), 1))(*m["shape"])
        strides = (ctypes.c_int64 * max(len(m["strides"]), 1))(*m["strides"])
        tensor = DLTensor(
            data=None if m["null_data"] else self.arr.ctypes.data,
            device=DLDevice(m["device_type"], 0),
            ndim=m["ndim"],
            dtype=DLDataType(m["code"], m["bits"], m["lanes"]),
            shape=ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64)),
            strides=ctypes.cast(strides, ctypes.POINTER(ctypes.c_int64)),
            byte_offset=0,
        )

        def on_delete(_ptr):
            self.deleted += 1

        if self.versioned:
            deleter = VERSIONED_DELETER(on_delete)
            managed = DLManagedTensorVersioned(
                version=DLPackVersion(m["major"], 0),
                manager_ctx=None,
                deleter=deleter,
                flags=1 if m["read_only"] else 0,
                dl_tensor=tensor,
            )
        else:
            deleter = LEGACY_DELETER(on_delete)
            managed = DLManagedTensor(dl_tensor=tensor, manager_ctx=None, deleter=deleter)
        self._keep.append((shape, strides, deleter, managed))
        self.made += 1
        name = self._name or _CAPSULE_NAMES[self.versioned]
        return _PyCapsule_New(ctypes.addressof(managed), name, None)


class DLPackOnly:
    """Hides an array behind the DLPack protocol alone (no NumPy interface), so the bindings take their
    DLPack path."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()
