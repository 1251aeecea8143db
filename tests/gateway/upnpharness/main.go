// Command upnpharness runs tendermint v0.34.24's p2p/upnp code against a gateway and
// prints one JSON line. The tests run it inside the client network namespace against the
// same miniupnpd as our Python client.
//
// Two paths, both through tendermint's own code:
//
//   - "discover": upnp.Discover() then GetExternalAddress(), exactly as probe_upnp does.
//     Discover sends ST ssdp:all and keeps only answers containing
//     "InternetGatewayDevice:1" (behaviour.md §7.1), so it finds no gateway that announces
//     IGD:2 types (miniupnpd built with IGD_V2, as Debian's is); its error is reported.
//   - "location": an M-SEARCH for ST InternetGatewayDevice:1 (written here, 20 lines),
//     then tendermint's unexported getServiceURL on the answer's LOCATION and
//     (*upnpNAT).GetExternalAddress, reached with go:linkname. Needs
//     -ldflags=-checklinkname=0 (Go >= 1.23 refuses linkname pulls otherwise).
//
// Output: {"discover_error"|"discover_control_url","discover_external_ip",...,
// "location", "control_url", "urn_domain", "external_ip"} or {"error": ...} (exit 1).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strings"
	"time"
	_ "unsafe" // go:linkname

	"github.com/tendermint/tendermint/p2p/upnp"
)

// natLayout has the field layout of upnp.upnpNAT (serviceURL, ourIP, urnDomain).
type natLayout struct {
	serviceURL string
	ourIP      string
	urnDomain  string
}

//go:linkname getServiceURL github.com/tendermint/tendermint/p2p/upnp.getServiceURL
func getServiceURL(rootURL string) (url, urnDomain string, err error)

//go:linkname getExternalAddress github.com/tendermint/tendermint/p2p/upnp.(*upnpNAT).GetExternalAddress
func getExternalAddress(n *natLayout) (addr net.IP, err error)

func fail(out map[string]string, err error) {
	out["error"] = err.Error()
	emit(out, 1)
}

func emit(out map[string]string, code int) {
	line, err := json.Marshal(out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println(string(line))
	os.Exit(code)
}

// field reads an unexported string field of upnp's NAT handle.
func field(nat upnp.NAT, name string) string {
	value := reflect.ValueOf(nat)
	if value.Kind() == reflect.Pointer {
		value = value.Elem()
	}
	return value.FieldByName(name).String()
}

// searchLocation sends one M-SEARCH for IGD:1 and returns the first answer's LOCATION.
func searchLocation(timeout time.Duration) (string, error) {
	conn, err := net.ListenPacket("udp4", ":0")
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	msg := "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n" +
		"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
		"MAN: \"ssdp:discover\"\r\nMX: 1\r\n\r\n"
	dst := &net.UDPAddr{IP: net.IPv4(239, 255, 255, 250), Port: 1900}
	if _, err := conn.WriteTo([]byte(msg), dst); err != nil {
		return "", err
	}
	buf := make([]byte, 2048)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			return "", err
		}
		for _, line := range strings.Split(string(buf[:n]), "\r\n") {
			name, value, ok := strings.Cut(line, ":")
			if ok && strings.EqualFold(strings.TrimSpace(name), "location") {
				return strings.TrimSpace(value), nil
			}
		}
	}
}

func main() {
	out := map[string]string{}
	if nat, err := upnp.Discover(); err != nil {
		out["discover_error"] = err.Error()
	} else {
		out["discover_control_url"] = field(nat, "serviceURL")
		out["discover_our_ip"] = field(nat, "ourIP")
		out["discover_urn_domain"] = field(nat, "urnDomain")
		if ext, err := nat.GetExternalAddress(); err != nil {
			out["discover_external_ip_error"] = err.Error()
		} else {
			out["discover_external_ip"] = ext.String()
		}
	}

	location, err := searchLocation(3 * time.Second)
	if err != nil {
		fail(out, fmt.Errorf("search: %w", err))
	}
	out["location"] = location
	controlURL, urnDomain, err := getServiceURL(location)
	if err != nil {
		fail(out, fmt.Errorf("getServiceURL: %w", err))
	}
	out["control_url"] = controlURL
	out["urn_domain"] = urnDomain
	ext, err := getExternalAddress(&natLayout{serviceURL: controlURL, urnDomain: urnDomain})
	if err != nil {
		fail(out, fmt.Errorf("GetExternalAddress: %w", err))
	}
	if ext == nil {
		fail(out, errors.New("GetExternalAddress: no address"))
	}
	out["external_ip"] = ext.String()
	emit(out, 0)
}
