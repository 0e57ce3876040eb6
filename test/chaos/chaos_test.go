package chaos

import (
	"os"
	"strings"
	"testing"
)

// TestChaos runs the mesh under chaos (Config: the short default, or CHAOS_* for `make chaos`)
// and fails on any broken promise, printing the table and every finding.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos run takes minutes")
	}
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Log = t.Logf
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("chaos harness: %v (logs in %s)", err, res.Dir)
	}
	var out strings.Builder
	res.Print(&out)
	t.Logf("chaos: %d CLI requests\n%s", res.Calls, out.String())
	for _, e := range res.Exits {
		t.Logf("note: %s", e)
	}
	if res.Failed() {
		t.Errorf("chaos: promises broken (table above); logs in %s", res.Dir)
		return
	}
	if os.Getenv("CHAOS_DIR") == "" {
		_ = os.RemoveAll(res.Dir)
	}
}
