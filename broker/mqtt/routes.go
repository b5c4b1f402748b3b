package mqtt

import (
	"slices"
	"strconv"
)

// Downlink routing: which connections reach a device.
//
// A device may hold several connections at once: a shell-script device
// listens with mosquitto_sub while it answers with mosquitto_pub, and
// firmware may open a second socket while the first one still lives.
// Downlinks (server-side RPC, shared attribute pushes) go to every one of
// the device's connections that subscribed to them, as ThingsBoard sends
// them to each subscribed session, and the device is online while any of
// its connections is. A device behind a gateway is reached through the
// gateway's subscribed connections.

// addRoute makes s reachable for downlinks to its device.
func (srv *Server) addRoute(s *session) {
	srv.mu.Lock()
	first := len(srv.devices[s.device.Name]) == 0
	srv.devices[s.device.Name] = append(srv.devices[s.device.Name], s)
	srv.mu.Unlock()
	srv.metrics.Connected.Inc()
	if first {
		srv.metrics.Online.Inc()
	}
}

// removeRoute forgets s. When it was its device's last connection, the
// device is offline, and so are the devices a gateway device routed.
func (srv *Server) removeRoute(s *session) {
	name := s.device.Name
	srv.mu.Lock()
	ss := srv.devices[name]
	i := slices.Index(ss, s)
	if i < 0 {
		srv.mu.Unlock()
		return
	}
	ss = slices.Delete(ss, i, i+1)
	last := len(ss) == 0
	if last {
		delete(srv.devices, name)
		for child, gw := range srv.gwChild {
			if gw == name {
				delete(srv.gwChild, child)
			}
		}
	} else {
		srv.devices[name] = ss
	}
	srv.mu.Unlock()
	srv.metrics.Connected.Dec()
	if last {
		srv.metrics.Online.Dec()
	}
}

// routesTo returns the connections of device itself and, when it has none,
// those of the gateway it was last reached through (and that gateway's
// name).
func (srv *Server) routesTo(device string) (direct []*session, gateway string, viaGateway []*session) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if ss := srv.devices[device]; len(ss) > 0 {
		return slices.Clone(ss), "", nil
	}
	if gw, ok := srv.gwChild[device]; ok {
		return nil, gw, slices.Clone(srv.devices[gw])
	}
	return nil, "", nil
}

// Online reports whether device has a connection of its own, or is behind
// a gateway device that has one and has spoken for it since connecting.
func (srv *Server) Online(device string) bool {
	direct, _, gw := srv.routesTo(device)
	return len(direct) > 0 || len(gw) > 0
}

// OnlineDevices counts the devices with at least one connection of their own.
func (srv *Server) OnlineDevices() int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return len(srv.devices)
}

// childrenOf returns the devices whose downlinks go through gateway device gw.
func (srv *Server) childrenOf(gw string) []string {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	var names []string
	for child, g := range srv.gwChild {
		if g == gw {
			names = append(names, child)
		}
	}
	return names
}

// sessionKey is the name mochi keeps a device's connection under (its
// client id as mochi sees it). mochi lets a new connection with a known
// client id take the old connection's place and disconnects the old one;
// keyed by the authenticated device as well, a client id names a session
// only within its own device, so another device, or anyone presenting
// that client id with other credentials, can never displace it. id is the
// client's id (or the one mochi assigned to a client that sent none).
func sessionKey(device, id string) string {
	return strconv.Itoa(len(device)) + ":" + device + "/" + id
}
