package netguard

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

func TestPublic(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"93.184.215.14": true, "8.8.8.8": true, "2606:4700::1111": true,
		"127.0.0.1": false, "127.8.9.10": false, "::1": false, "10.1.2.3": false, "172.16.0.1": false,
		"192.168.1.1": false, "169.254.169.254": false, "fe80::1": false, "fc00::1": false, "224.0.0.1": false,
		"ff02::1": false, "0.0.0.0": false, "::": false, "100.64.0.1": false, "255.255.255.255": false,
		"::ffff:127.0.0.1": false, "::ffff:10.0.0.1": false, "::ffff:93.184.215.14": true,
	} {
		if got := Public(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Public(%s) = %v, want %v", addr, got, want)
		}
	}
}

type fakeDNS map[string][]netip.Addr

func (f fakeDNS) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	dns := fakeDNS{
		"hooks.example.com":  {netip.MustParseAddr("93.184.215.14")},
		"rebind.example.com": {netip.MustParseAddr("93.184.215.14"), netip.MustParseAddr("10.0.0.7")},
	}
	for raw, refused := range map[string]bool{
		"https://hooks.example.com/x":   false,
		"https://unknown.example.org/x": false, // checked again at delivery time
		"http://93.184.215.14:8080/":    false,
		"https://rebind.example.com/":   true,
		"http://127.0.0.1:9000/hook":    true,
		"http://localhost/hook":         true,
		"http://api.localhost./hook":    true,
		"http://[::1]/hook":             true,
		"http://169.254.169.254/latest": true,
		"http://[::ffff:192.168.0.1]/x": true,
		"http://0.0.0.0:80/":            true,
	} {
		err := CheckURL(context.Background(), dns, raw)
		if got := errors.Is(err, ErrNotPublic); got != refused {
			t.Errorf("CheckURL(%s) = %v, want refused %v", raw, err, refused)
		}
	}
}

func TestControl(t *testing.T) {
	t.Parallel()
	if err := Control("tcp4", "127.0.0.1:80", nil); !errors.Is(err, ErrNotPublic) {
		t.Errorf("Control(127.0.0.1) = %v, want a refusal", err)
	}
	if err := Control("tcp4", "93.184.215.14:443", nil); err != nil {
		t.Errorf("Control(public) = %v", err)
	}
}
