"""What every notebook's cells are built from (make_notebooks.py and the nbNN_*.py files use it)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

SETUP = """%matplotlib inline
import numpy as np
import matplotlib.pyplot as plt
import grpokit
rng = np.random.default_rng(0)"""


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str):
    return new_code_cell(text.strip())
