# The lab: castle-lab talos --nodes 127.0.0.211,127.0.0.212,127.0.0.213,127.0.0.214,127.0.0.215
# emulates five Talos nodes in maintenance mode on loopback; the VIP answers once bootstrapped.
cluster_name   = "lab"
vip            = "127.0.0.210"
gateway        = "127.0.0.1"
nameservers    = ["127.0.0.1"]
create_timeout = "5m"

addresses = {
  cp-1 = "127.0.0.211/24"
  cp-2 = "127.0.0.212/24"
  cp-3 = "127.0.0.213/24"
  w-1  = "127.0.0.214/24"
  w-2  = "127.0.0.215/24"
}
