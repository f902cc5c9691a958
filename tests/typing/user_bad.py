import numpy as np
import exaq_cpu

x = np.zeros((2, 4), np.float32)
wrong_bits = exaq_cpu.softmax(x, 5)
not_array: np.ndarray = exaq_cpu.softmax(x, 2, output="packed")
bad_floor = exaq_cpu.softmax(x, 2, floor="one")
