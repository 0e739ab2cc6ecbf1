//! Client of the Proxmox VE API.
