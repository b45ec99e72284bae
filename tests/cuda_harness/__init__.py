"""Runs backprop's CUDA kernel sources on the CPU: g++ compiles them with shim.h standing in for CUDA."""
