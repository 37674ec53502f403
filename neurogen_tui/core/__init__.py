"""What every room uses: events and the bus, untrusted text made inert, the one monitoring
allowance, and the machine's cores, memory, load and GPU readings. Imports nothing of the package."""
