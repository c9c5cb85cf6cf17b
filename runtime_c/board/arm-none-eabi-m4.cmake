# CMake toolchain file for Cortex-M4F with the GNU Arm toolchain (arm-none-eabi-gcc), the flags
# board/board.mk uses for the emulated board:
#   cmake -S . -B build-m4 -DCMAKE_TOOLCHAIN_FILE=board/arm-none-eabi-m4.cmake && cmake --build build-m4
# Builds the model library (no self-test executable: a firmware needs the board's startup and linker
# script, see board/porting.h). Override ARM_CPU_FLAGS for another core, e.g. -mcpu=cortex-m7 ...
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(ARM_CPU_FLAGS "-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16" CACHE STRING "CPU flags")
set(CMAKE_C_FLAGS_INIT "${ARM_CPU_FLAGS} -ffunction-sections -fdata-sections")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
