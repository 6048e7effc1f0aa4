"""BTF + symbols -> Volatility ISF."""

from .generator import generate, generate_types_only
from .symbols import load_symbol_file, parse_symbol_lines

__all__ = ["generate", "generate_types_only", "load_symbol_file", "parse_symbol_lines"]
