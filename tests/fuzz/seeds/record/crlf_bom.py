import os
print("é▁😀")x = 1
