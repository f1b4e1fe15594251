#ifndef DISTTRAIN_CIMAGE_SHIM_H
#define DISTTRAIN_CIMAGE_SHIM_H
#include <stdio.h>
#include <png.h>
#include <jpeglib.h>
#endif
