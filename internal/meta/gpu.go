package meta

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// ProbeGPU asks NVML (loaded with dlopen; absent on machines without the NVIDIA driver)
// for the driver, CUDA driver version and devices. It never fails: a machine without NVML
// gets Available=false and the reason.
func ProbeGPU() (g GPU) {
	defer func() {
		if r := recover(); r != nil {
			g = GPU{Reason: fmt.Sprintf("NVML: %v", r)}
		}
	}()
	if ret := nvml.Init(); ret != nvml.SUCCESS {
		return GPU{Reason: "NVML: " + nvml.ErrorString(ret)}
	}
	defer nvml.Shutdown()
	g.Available = true
	if v, ret := nvml.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		g.DriverVersion = CleanVersion(v)
	}
	if v, ret := nvml.SystemGetCudaDriverVersion(); ret == nvml.SUCCESS {
		g.CudaDriverVersion = v
	}
	n, ret := nvml.DeviceGetCount()
	if ret != nvml.SUCCESS {
		g.Reason = "NVML: " + nvml.ErrorString(ret)
		return g
	}
	for i := 0; i < n; i++ {
		d, ret := nvml.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue
		}
		dev := GPUDevice{Index: i}
		dev.Name, _ = d.GetName()
		dev.UUID, _ = d.GetUUID()
		if m, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
			dev.MemoryBytes = m.Total
		}
		g.Devices = append(g.Devices, dev)
	}
	return g
}
