import numpy as np
import exaq_cpu

x = np.zeros((2, 4), np.float32)
probs: np.ndarray = exaq_cpu.softmax(x, 2)
exact: np.ndarray = exaq_cpu.softmax(x, None, axis=0)
packed: exaq_cpu.PackedSoftmax = exaq_cpu.softmax(x, 3, output="packed", clip="row")
back: np.ndarray = packed.to_float()
