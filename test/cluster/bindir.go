package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// BinDirs is where the cluster's Binaries are looked for, in order: Set; else the directory of
// Executable; else bin/ beside the go.work above WorkDir.
type BinDirs struct {
	// Set is a directory the user named (a flag, $TROUPE_CLUSTER_BIN): when not empty it is the
	// only place looked in, so that a wrong setting is an error and not quietly ignored. SetBy
	// names the setting in errors.
	Set, SetBy string
	// Executable is the running program's path: `make build` puts troupe and troupe-dev into bin/
	// beside the cluster's binaries, so a troupe run from anywhere finds them there.
	Executable string
	// WorkDir is where to walk up from to a go.work: `make cluster-bin` builds into bin/ beside
	// it, which is where the tests find them.
	WorkDir string
}

// ProcessBinDirs is this process's BinDirs: set (named setBy), its executable, its working
// directory.
func ProcessBinDirs(set, setBy string) BinDirs {
	b := BinDirs{Set: set, SetBy: setBy}
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			b.Executable = exe
		}
	}
	b.WorkDir, _ = os.Getwd()
	return b
}

// Find returns the first of the places of b that holds every one of Binaries. When none does,
// the error names every place looked in and what it lacks.
func (b BinDirs) Find() (string, error) {
	const build = "build them with `make cluster-bin` (~10 min the first time)"
	if b.Set != "" {
		if missing := missingBinary(b.Set); missing != "" {
			return "", fmt.Errorf("cluster: %s is missing in %s (%s): %s", missing, b.Set, b.SetBy, build)
		}
		return b.Set, nil
	}
	looked := []string{b.SetBy + " (not set)"}
	if b.Executable != "" {
		dir := filepath.Dir(b.Executable)
		missing := missingBinary(dir)
		if missing == "" {
			return dir, nil
		}
		looked = append(looked, fmt.Sprintf("%s beside the executable (no %s)", dir, missing))
	} else {
		looked = append(looked, "beside the executable (its path is unknown)")
	}
	if work := findGoWork(b.WorkDir); work != "" {
		dir := filepath.Join(work, "bin")
		missing := missingBinary(dir)
		if missing == "" {
			return dir, nil
		}
		looked = append(looked, fmt.Sprintf("%s beside go.work (no %s)", dir, missing))
	} else {
		looked = append(looked, fmt.Sprintf("bin/ beside go.work (no go.work in %s or above)", b.WorkDir))
	}
	return "", fmt.Errorf("cluster: the cluster's binaries are in none of: %s; %s", strings.Join(looked, "; "), build)
}

// missingBinary returns the first of Binaries not in dir, or "" when all are.
func missingBinary(dir string) string {
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return b
		}
	}
	return ""
}

// findGoWork returns the directory of the go.work found walking up from dir, or "".
func findGoWork(dir string) string {
	if dir == "" {
		return ""
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}
