"""wpcompare: compare ways to restore checkpointed memory and catch its first writes."""

__version__ = "0.1.0"
