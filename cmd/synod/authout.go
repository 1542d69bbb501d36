package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
)

// authResult prints the result of a user, role or auth command: the
// response as JSON with -w json, else the simple text line (as etcdctl).
func (a *app) authResult(cmd *cobra.Command, resp proto.Message, simple string) error {
	p := a.printer(cmd)
	if p.format == outputJSON {
		return p.json(resp)
	}
	return p.write([]byte(simple + "\n"))
}

// readPassword returns the password part of NAME:PASSWORD, or the flag, or
// a line read from stdin (never echoed back, never logged).
func readPassword(cmd *cobra.Command, arg, flag, prompt string) (name, password string, err error) {
	name, password, ok := strings.Cut(arg, ":")
	if ok {
		return name, password, nil
	}
	if flag != "" {
		return name, flag, nil
	}
	fmt.Fprint(cmd.ErrOrStderr(), prompt)
	line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", "", fmt.Errorf("read password: %w", err)
	}
	fmt.Fprintln(cmd.ErrOrStderr())
	return name, strings.TrimRight(line, "\r\n"), nil
}
