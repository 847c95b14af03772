//go:build !linux

package main

import "os"

// fdatasync is fsync where the system call is not available to us.
func fdatasync(f *os.File) error { return f.Sync() }
