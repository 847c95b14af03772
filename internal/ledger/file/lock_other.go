//go:build !unix

package file

import (
	"errors"
	"fmt"
	"os"
)

var errLocked = errors.New("locked by another process")

// lock refuses: without flock, two processes could append to one ledger
// and corrupt it, and the file ledger would rather not open than risk that.
func lock(*os.File) error {
	return fmt.Errorf("the file ledger needs a Unix system: %w", errors.ErrUnsupported)
}
