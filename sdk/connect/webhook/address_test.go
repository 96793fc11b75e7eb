package webhook

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestCheckURL(t *testing.T) {
	for _, tc := range []struct {
		url    string
		policy URLPolicy
		ok     bool
	}{
		{"https://erase.example.com/lethe", URLPolicy{}, true},
		{"https://93.184.215.14:8443/x", URLPolicy{}, true},
		{"http://erase.example.com/", URLPolicy{AllowHTTP: true, AllowPrivate: true}, false},
		{"http://127.0.0.1:8080/", URLPolicy{AllowHTTP: true, AllowPrivate: true}, true},
		{"http://127.0.0.1:8080/", URLPolicy{AllowHTTP: true}, false},
		{"http://127.0.0.1:8080/", URLPolicy{AllowPrivate: true}, false},
		{"https://localhost./", URLPolicy{}, false},
		{"https://a:b@erase.example.com/", URLPolicy{}, false},
		{"https://erase.example.com/#x", URLPolicy{}, false},
		{"https://10.1.2.3/", URLPolicy{}, false},
		{"https://10.1.2.3/", URLPolicy{AllowPrivate: true}, true},
		{"https://172.16.0.1/", URLPolicy{}, false},
		{"https://192.168.0.1/", URLPolicy{}, false},
		{"https://169.254.10.1/", URLPolicy{}, false},
		{"https://169.254.169.254/", URLPolicy{AllowPrivate: true}, false},
		{"https://[fd00:ec2::254]/", URLPolicy{AllowPrivate: true}, false},
		{"https://[fd12::1]/", URLPolicy{}, false},
		{"https://[fe80::1]/", URLPolicy{}, false},
		{"https://[::ffff:10.0.0.1]/", URLPolicy{}, false},
		{"https://0.0.0.0/", URLPolicy{AllowPrivate: true}, false},
		{"https://100.64.0.1/", URLPolicy{AllowPrivate: true}, false},
		{"https:///nohost", URLPolicy{}, false},
		{"mailto:dpo@example.com", URLPolicy{}, false},
	} {
		if err := CheckURL(tc.url, tc.policy); (err == nil) != tc.ok {
			t.Errorf("CheckURL(%q, %+v) = %v, want ok=%v", tc.url, tc.policy, err, tc.ok)
		}
	}
}

// The address is checked again where it is dialled, after DNS resolution:
// a name that resolves to a loopback address is refused at connect time
// even when the URL passed the registry's check (DNS rebinding).
func TestTheDialledAddressIsChecked(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	for _, allow := range []bool{false, true} {
		client := newClient(Config{AllowPrivate: allow})
		resp, err := client.Get(srv.URL)
		if resp != nil {
			resp.Body.Close()
		}
		if allow != (err == nil) || !allow && !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("AllowPrivate=%v: dial %s = %v", allow, srv.URL, err)
		}
		client.CloseIdleConnections()
	}
	if err := CheckAddr(netip.MustParseAddr("8.8.8.8"), false); err != nil {
		t.Errorf("a public address is refused: %v", err)
	}
}
