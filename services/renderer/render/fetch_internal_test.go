package render

import (
	"errors"
	"net/http"
	"testing"

	"oras.land/oras-go/v2/registry/remote/errcode"
)

// A registry's status code decides the reason; in words, a status code counts only as a number
// of its own — a registry on port 40329 is not a 403.
func TestClassifyFetch(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New(`failed to perform "FetchReference" on source: 127.0.0.1:40329/charts/podinfo:9.9.9: not found`), ReasonSourceNotFound},
		{errors.New(`127.0.0.1:40429/charts/x: response status code 403: denied`), ReasonAuthDenied},
		{errors.New(`GET https://127.0.0.1:4011/v2/: 401 Unauthorized`), ReasonAuthDenied},
		{errors.New(`dial tcp 127.0.0.1:40401: connect: connection refused`), ReasonSourceUnreachable},
		{&errcode.ErrorResponse{Method: http.MethodGet, StatusCode: http.StatusNotFound}, ReasonSourceNotFound},
		{&errcode.ErrorResponse{Method: http.MethodGet, StatusCode: http.StatusForbidden}, ReasonAuthDenied},
	} {
		if got := classifyFetch("oci://x", tc.err).Reason; got != tc.want {
			t.Errorf("%v: %s, want %s", tc.err, got, tc.want)
		}
	}
}
