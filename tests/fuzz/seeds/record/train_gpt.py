import os
print("▁ piece")
