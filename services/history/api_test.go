package history_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/troupe-dev/troupe/services/history"
)

// TestAPIOffLoopbackNeedsAToken: the history API may listen off loopback only with a token, and
// then answers only requests that carry it.
func TestAPIOffLoopbackNeedsAToken(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:8081": true, "localhost:8081": true, "[::1]:8081": true,
		":8081": false, "0.0.0.0:8081": false, "10.0.0.5:8081": false, "[::]:8081": false} {
		err := history.CheckAPIListen(addr, "")
		assert.Equal(t, ok, err == nil, "%s: %v", addr, err)
		assert.NoError(t, history.CheckAPIListen(addr, "s3cret"), addr)
	}

	h := history.Guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("manifests")) }), "s3cret")
	for auth, code := range map[string]int{"": http.StatusUnauthorized, "Bearer nope": http.StatusUnauthorized,
		"Bearer s3cret": http.StatusOK, "s3cret": http.StatusUnauthorized} {
		req := httptest.NewRequest(http.MethodGet, "/releases", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		assert.Equal(t, code, rec.Code, "Authorization %q", auth)
		assert.Equal(t, code == http.StatusOK, rec.Body.String() == "manifests")
	}
}
