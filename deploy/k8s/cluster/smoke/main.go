// Command smoke proves a fresh deploy/k8s/cluster.sh cluster works end to end:
//
//	smoke serve :8080        answers GET / with "smoke from <hostname>"
//	smoke get URL [TIMEOUT]  resolves URL's host (cluster DNS), GETs it until it answers 200
//	                         or TIMEOUT (default 60s) passes, prints the body and the address
//
// Statically linked and dependency-free, so its image is this one file.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: smoke serve ADDR | smoke get URL [TIMEOUT]")
		os.Exit(64)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2])
	case "get":
		timeout := 60 * time.Second
		if len(os.Args) > 3 {
			var err error
			if timeout, err = time.ParseDuration(os.Args[3]); err != nil {
				fmt.Fprintln(os.Stderr, "smoke:", err)
				os.Exit(64)
			}
		}
		os.Exit(get(os.Args[2], timeout))
	default:
		fmt.Fprintln(os.Stderr, "smoke: unknown mode", os.Args[1])
		os.Exit(64)
	}
}

func serve(addr string) {
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "smoke from %s\n", host)
	})
	fmt.Println("smoke: serving on", addr)
	if err := http.ListenAndServe(addr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "smoke:", err)
		os.Exit(1)
	}
}

// get retries until the Service answers: its endpoints and kube-proxy's rules may trail the pod.
func get(raw string, timeout time.Duration) int {
	target, err := url.Parse(raw)
	if err != nil {
		fmt.Fprintln(os.Stderr, "smoke:", err)
		return 64
	}
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		addrs, lookupErr := net.DefaultResolver.LookupHost(context.Background(), target.Hostname())
		if lookupErr == nil {
			resp, getErr := client.Get(raw)
			if getErr == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					fmt.Printf("smoke: %s resolved to %v answered: %s\n", target.Hostname(), addrs, strings.TrimSpace(string(body)))
					return 0
				}
				err = fmt.Errorf("status %s", resp.Status)
			} else {
				err = getErr
			}
		} else {
			err = lookupErr
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "smoke: gave up:", err)
			return 1
		}
		time.Sleep(500 * time.Millisecond)
	}
}
