package history

import (
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// DefaultAPIListen is where the history's HTTP API listens unless told otherwise: loopback, so
// the manifests it serves reach no one off the host by default.
const DefaultAPIListen = "127.0.0.1:8081"

// Guard wraps the HTTP API h: with a token, a request must carry "Authorization: Bearer
// <token>" (compared in constant time) or gets 401; without one, h as it is.
func Guard(h http.Handler, token string) http.Handler {
	if token == "" {
		return h
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="troupe history"`)
			http.Error(w, `{"error":"a bearer token is required"}`, http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// CheckAPIListen refuses to serve the HTTP API on addr off loopback without a token: it serves
// every release's manifests.
func CheckAPIListen(addr, token string) error {
	if token != "" || loopback(addr) {
		return nil
	}
	return fmt.Errorf("the history API on %s is reachable off this host: give it a bearer token (--api-token-file), or listen on loopback", addr)
}

// loopback reports whether addr (host:port) listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
