"""Stand-in of triton.tools.tensor_descriptor (golf-verify CPU harness): a descriptor carries its
tensor (`.base`) for the kernel twins of triton/_twins.py."""


class TensorDescriptor:
    def __init__(self, base, shape=None, strides=None, block_shape=None):
        self.base, self.shape, self.strides, self.block_shape = base, shape, strides, block_shape

    @classmethod
    def from_tensor(cls, tensor, block_shape):
        return cls(tensor, list(tensor.shape), list(tensor.stride()), list(block_shape))
