"""placeholder"""
from vlcore import hookimpl
